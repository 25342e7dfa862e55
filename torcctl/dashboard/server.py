"""The dashboard's HTTP side: its page and assets, and a door to the daemon's own RPC methods
(a fixed list; actions are recorded with `source: dashboard`), the DAG placed for drawing,
resource plots, live events (WebSockets) and logs followed. It only translates: every
read and every change is a call the CLI makes too."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

from torcctl.api.client import Client
from torcctl.api.log_paths import attempt_log_path
from torcctl.api.models import Attempt
from torcctl.dashboard import logs
from torcctl.dashboard.access import Seen, Sessions, judge
from torcctl.dashboard.hub import Hub, Subscriber
from torcctl.dashboard.layout import NODE_HEIGHT, NODE_WIDTH, place, size
from torcctl.dashboard.peers import peer_uid
from torcctl.errors import InvalidParams, InvalidTransition, NotFound, RpcError, SpecError, TorcError, Unauthorized
from torcd.plots import memory_svg, runtime_svg, timeline_svg
from torcd.protocol import AttemptInfo

READS = frozenset(
    {
        "workflows.list",
        "workflows.show",
        "workflows.results",
        "jobs.list",
        "jobs.count",
        "jobs.show",
        "jobs.attempts",
        "jobs.explain",
        "events.list",
        "allocations.list",
        "workers.list",
        "actions.list",
    }
)
# Changes, each by the method the CLI uses; True: the daemon records who asked (`source`).
ACTIONS = {
    "jobs.retry": True,
    "jobs.fail": True,
    "jobs.classify": True,
    "workflows.recover": True,
    "workflows.reset_status": False,
    "workflows.cancel": False,
}
PLOTS: dict[str, Callable[[list[AttemptInfo]], str]] = {
    "memory.svg": memory_svg,
    "runtime.svg": runtime_svg,
    "timeline.svg": timeline_svg,
}
STATUS_OF = {NotFound: 404, InvalidParams: 400, SpecError: 400, InvalidTransition: 409, Unauthorized: 403}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
    "connect-src 'self' ws://127.0.0.1:* ws://localhost:* ws://[::1]:*",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token in the first URL goes nowhere
    "Cache-Control": "no-store",
}
MAX_BODY = 4 * 1024 * 1024
STATIC = resources.files("torcctl.dashboard") / "static"


class DaemonCalls:
    """A few clients (one connection each) shared by the browsers; blocking calls in a pool of
    the dashboard's own, so a daemon hosting the dashboard keeps its threads for itself."""

    def __init__(self, connect: Callable[[], Client], connections: int = 4) -> None:
        self.connect = connect
        self.pool = ThreadPoolExecutor(connections + 2, thread_name_prefix="torc-dashboard")
        self.idle: asyncio.Queue[Client] = asyncio.Queue()
        self.made = 0
        self.connections = connections

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        if self.idle.empty() and self.made < self.connections:
            self.made += 1
            self.idle.put_nowait(self.connect())
        client = await self.idle.get()
        try:
            return await self.run(client.call, method, params)
        finally:
            self.idle.put_nowait(client)

    def follow_all(self, after: int) -> Iterator[Any]:
        """Every workflow's events after `after` (for the hub's thread), on a connection of its own."""
        client = self.connect()
        try:
            yield from client.all_events(after=after)
        finally:
            client.close()

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().close()
        self.pool.shutdown(wait=False, cancel_futures=True)


class Dashboard:
    def __init__(self, calls: DaemonCalls, sessions: Sessions | None = None, hub: Hub | None = None) -> None:
        self.calls = calls
        self.sessions = sessions or Sessions()
        self.hub = hub or Hub(calls.follow_all)
        self.page = (STATIC / "index.html").read_text()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_post("/api/rpc", self.rpc)
        app.router.add_get("/api/graph/{workflow_id}", self.graph)
        app.router.add_get("/api/plots/{workflow_id}/{name}", self.plot)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get("/api/log/{job_id}", self.log)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        self.hub.close()
        self.calls.close()

    # -- who may see it --

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        seen = Seen(
            method=request.method,
            host=request.headers.get("Host"),
            origin=request.headers.get("Origin"),
            token=request.query.get("token"),
            session=request.cookies.get(self.cookie_name(request)),
            csrf=request.headers.get("X-Torc-CSRF"),
            peer_is_user=_peer_is_user(request),
            websocket=request.headers.get("Upgrade", "").lower() == "websocket",
        )
        verdict = judge(seen, self.sessions)
        if verdict.outcome == "refuse":
            if request.path.startswith("/api/"):
                resp: web.StreamResponse = web.json_response(
                    {"error": {"message": verdict.reason}}, status=verdict.status
                )
            else:
                resp = web.Response(text=f"torc dashboard: {verdict.reason}\n", status=verdict.status)
            resp.headers.update(SECURITY_HEADERS)
            return resp
        if verdict.outcome == "login":
            request["session"] = self.sessions.open()
        else:
            request["session"] = seen.session
        resp = await handler(request)
        if verdict.outcome == "login":
            resp.set_cookie(self.cookie_name(request), request["session"], httponly=True, samesite="Strict", path="/")
        if not resp.prepared:
            resp.headers.update(SECURITY_HEADERS)
        return resp

    @staticmethod
    def cookie_name(request: web.Request) -> str:
        """One per port: two dashboards on one host keep their own sessions."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return f"torc_dashboard_{sockname[1] if sockname else 0}"

    # -- the page --

    async def index(self, request: web.Request) -> web.Response:
        csrf = self.sessions.csrf[request["session"]]
        return web.Response(text=self.page.replace("{{csrf}}", csrf), content_type="text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kinds = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain"}
        kind = kinds.get(os.path.splitext(name)[1])
        asset = STATIC / name
        if kind is None or "/" in name or not asset.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=asset.read_bytes(), content_type=kind)

    # -- the daemon's methods --

    async def rpc(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # nested too deep: not ours
            return _error(400, 'the body must be JSON: {"method": ..., "params": {...}}')
        if not isinstance(body, dict) or not isinstance(body.get("params", {}), dict):
            return _error(400, 'the body must be {"method": ..., "params": {...}}')
        method, params = body.get("method"), dict(body.get("params") or {})
        if not isinstance(method, str):
            return _error(400, 'the body must be {"method": "a method\'s name", "params": {...}}')
        if method in ACTIONS:
            if ACTIONS[method]:
                params["source"] = "dashboard"
        elif method not in READS:
            return _error(400, f"the dashboard does not call {method!r}")
        return await self._answer(self.calls.call(method, params))

    async def _answer(self, call: Awaitable[Any]) -> web.Response:
        try:
            result = await call
        except RpcError as e:
            return _refused(e)
        except TorcError as e:  # the daemon is gone or unreachable
            return _error(502, str(e))
        return web.Response(body=msgspec.json.encode({"result": result}), content_type="application/json")

    async def graph(self, request: web.Request) -> web.Response:
        wf = _positive(request.match_info["workflow_id"])

        async def placed() -> dict[str, Any]:
            g = await self.calls.call("workflows.graph", {"workflow_id": wf})
            spots = {
                p.key: p
                for p in place([n["key"] for n in g["nodes"]], [(e["source"], e["target"]) for e in g["edges"]])
            }
            for n in g["nodes"]:
                p = spots[n["key"]]
                n.update(x=p.x, y=p.y)
            width, height = size(list(spots.values()))
            return {**g, "width": width, "height": height, "node_width": NODE_WIDTH, "node_height": NODE_HEIGHT}

        return await self._answer(placed())

    async def plot(self, request: web.Request) -> web.Response:
        """A resource plot of the workflow's current run, drawn by the code `reports plot-resources` uses."""
        wf, name = _positive(request.match_info["workflow_id"]), request.match_info["name"]
        draw = PLOTS.get(name)
        if draw is None:
            raise web.HTTPNotFound()
        try:
            rows = await self.calls.call("workflows.results", {"workflow_id": wf})
        except RpcError as e:
            return _refused(e)
        except TorcError as e:  # the daemon is gone or unreachable
            return _error(502, str(e))
        svg = await self.calls.run(lambda: draw(msgspec.convert(rows, list[AttemptInfo])))
        return web.Response(text=svg, content_type="image/svg+xml")

    # -- live --

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Live updates over a WebSocket (a browser caps plain HTTP at six connections to a host,
        which a few tabs holding streams would use up; WebSockets have a pool of their own)."""
        wf = request.query.get("workflow_id")
        sub = self.hub.subscribe(_positive(wf) if wf else None)
        try:
            return await _send_until_closed(request, _messages(sub))
        finally:
            self.hub.unsubscribe(sub)

    async def log(self, request: web.Request) -> web.StreamResponse:
        """A job attempt's stdout, stderr or recovery log, followed; the path comes from the
        daemon's record of the attempt, never from the browser."""
        job_id = _positive(request.match_info["job_id"])
        stream = request.query.get("stream", "stdout")
        if stream not in ("stdout", "stderr", "recovery"):
            return _error(400, "stream must be stdout, stderr or recovery")
        attempt = request.query.get("attempt")
        try:
            attempts = msgspec.convert(await self.calls.call("jobs.attempts", {"job_id": job_id}), list[Attempt])
            path = attempt_log_path(
                attempts,
                _positive(attempt) if attempt else None,
                "stdout" if stream == "recovery" else stream,
                recovery=stream == "recovery",
                job_id=job_id,
            )
        except RpcError as e:
            return _refused(e)
        except TorcError as e:  # the daemon is gone or unreachable
            return _error(502, str(e))
        except ValueError as e:
            return _error(404, str(e))
        return await _send_until_closed(request, logs.follow(path))


async def _messages(sub: Subscriber) -> AsyncIterator[Any]:
    while not sub.dropped:
        yield await sub.queue.get()


async def _send_until_closed(request: web.Request, messages: AsyncIterator[Any]) -> web.WebSocketResponse:
    """Send each message as JSON until the browser closes the socket (its close frame is only
    seen by reading, hence the reader beside the sender) or the messages end."""
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=4096)
    await ws.prepare(request)

    async def send() -> None:
        async for message in messages:
            await ws.send_bytes(msgspec.json.encode(message))

    async def read() -> None:
        async for _ in ws:  # the browser sends nothing; this sees its close
            pass

    tasks = [asyncio.ensure_future(send()), asyncio.ensure_future(read())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ws.close()
    return ws


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 0 < n < 2**63:
        raise web.HTTPBadRequest(
            text=msgspec.json.encode({"error": {"message": f"not an id: {text[:40]!r}"}}).decode(),
            content_type="application/json",
        )
    return n


def _refused(e: RpcError) -> web.Response:
    return _error(next((s for t, s in STATUS_OF.items() if isinstance(e, t)), 502), e.message)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


def _peer_is_user(request: web.Request) -> bool:
    transport = request.transport
    if transport is None:
        return False
    peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
    if not isinstance(peer, tuple) or not isinstance(local, tuple):
        return False
    uid = peer_uid(peer, local)
    return uid is None or uid == os.getuid()
