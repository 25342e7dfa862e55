"""The HTTP doors: POST /rpc (JSON-RPC) and GET /events (NDJSON stream), on the Unix socket and
the TCP door. Who is calling is decided here, once per request; what they may call, in `rpc`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from aiohttp import web

from torcd.api import rpc
from torcd.bus import EventBus
from torcd.config import Config
from torcd.core.labels import ServedLabels, label_problem
from torcd.credentials import ADMIN, Caller, allocation_of, matches
from torcd.errors import NotFound
from torcd.events import IDLE, Event
from torcd.store.queries import Queries

log = structlog.get_logger("torcd.api.server")
_encode = msgspec.json.Encoder().encode
ENCODED_KEPT = 4096  # events whose lines are kept for the other streams
BACKLOG_PAGE = 10_000  # events read at a time for a stream's backlog
PEER_CHECK_SECONDS = 0.5  # a quiet stream looks this often for a reader that left (and the label it served)


def peer_uid(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class ServerState:
    """What the doors need of the daemon, and what they tell it: which clients are attached."""

    def __init__(
        self,
        config: Config,
        methods: rpc.Methods,
        handlers: Any,
        queries: Queries,
        bus: EventBus,
        stopping: asyncio.Event,
        credential: Callable[[int], Awaitable[tuple[str, int] | None]],
    ):
        self.config, self.methods, self.handlers = config, methods, handlers
        self.queries, self.bus, self.stopping, self.credential = queries, bus, stopping, credential
        self.admin_token: str | None = None  # of the TCP door, once it is open
        self.requests_in_flight = 0  # RPC requests being served
        self.streams: dict[object, int] = {}  # open event streams -> the workflow each follows
        self.lines: dict[int, bytes] = {}  # recent events as NDJSON lines, by seq: encoded once for every stream
        self.labels = ServedLabels()  # the local executor's: a stream with `serve_label` serves one

    def line(self, event: Any) -> bytes:
        """An event as one NDJSON line, encoded once however many streams follow it."""
        line = self.lines.get(event.seq)
        if line is None:
            line = self.lines[event.seq] = _encode(event) + b"\n"
            if len(self.lines) > ENCODED_KEPT:
                del self.lines[next(iter(self.lines))]
        return line


def build_app(state: ServerState) -> web.Application:
    app = web.Application(client_max_size=state.config.max_request_bytes, middlewares=[_only_our_user(state)])
    _add_rpc_routes(app, state)
    _add_event_routes(app, state)
    if state.config.metrics:
        _add_metrics_routes(app, state)
    return app


def _only_our_user(state: ServerState):
    @web.middleware
    async def only_our_user(request: web.Request, handler):
        caller = await _caller_of(state, request)
        if isinstance(caller, web.Response):
            return caller
        if not caller.admin and request.path != "/rpc":
            return web.json_response(
                {"error": "an allocation's credential may only call /rpc (workers.*, user_data.*)"}, status=403
            )
        request["caller"] = caller
        return await handler(request)

    return only_our_user


def _add_rpc_routes(app: web.Application, state: ServerState) -> None:
    async def rpc_endpoint(request: web.Request) -> web.Response:
        return await _serve_rpc(state, request)

    app.router.add_post("/rpc", rpc_endpoint)


def _add_event_routes(app: web.Application, state: ServerState) -> None:
    async def events_endpoint(request: web.Request) -> web.StreamResponse:
        return await _stream_events(state, request)

    app.router.add_get("/events", events_endpoint)


def _add_metrics_routes(app: web.Application, state: ServerState) -> None:
    from torcd import metrics

    async def metrics_endpoint(request: web.Request) -> web.Response:
        return web.Response(body=await metrics.render(state.queries), headers={"Content-Type": metrics.CONTENT_TYPE})

    app.router.add_get("/metrics", metrics_endpoint)


async def _caller_of(state: ServerState, request: web.Request) -> Caller | web.Response:
    uid = peer_uid(request)
    if uid is not None:
        if uid != os.getuid():
            log.warning("peer_refused", peer_uid=uid)
            return web.json_response({"error": f"uid {uid} may not use this daemon"}, status=403)
        return ADMIN
    # The TCP door: the admin token or an allocation's credential, compared in constant time.
    given = request.headers.get("Authorization", "")
    token = given[len("Bearer ") :] if given.startswith("Bearer ") else ""
    if not token.isascii():  # credentials are ASCII; anything else is simply wrong
        token = ""
    if token and state.admin_token and hmac.compare_digest(token.encode(), state.admin_token.encode()):
        return ADMIN
    aid = allocation_of(token) if token else None
    if aid is not None:
        known = await state.credential(aid)
        if known is not None and matches(token, known[0]):
            return Caller(allocation_id=aid, workflow_id=known[1])
    log.warning("tcp_request_refused", peer=request.remote, reason="missing or wrong token")
    return web.json_response({"error": "missing or wrong bearer token"}, status=401)


async def _serve_rpc(state: ServerState, request: web.Request) -> web.Response:
    size = request.content_length
    if size is not None and size > state.config.max_request_bytes:
        return web.Response(
            status=413,
            content_type="application/json",
            body=_encode(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": -32600,
                        "message": f"request of {size} bytes is larger than the limit of "
                        f"{state.config.max_request_bytes}",
                    },
                }
            ),
        )
    try:
        body = await asyncio.wait_for(request.read(), state.config.body_timeout)
    except TimeoutError:
        return web.Response(
            status=408,
            content_type="application/json",
            body=_encode(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": -32600,
                        "message": f"the request body did not arrive within {state.config.body_timeout:g} s",
                    },
                }
            ),
        )
    state.requests_in_flight += 1
    try:
        reply = await rpc.handle(
            state.methods, state.handlers, body, request["caller"], request.headers.get("Idempotency-Key")
        )
    finally:
        state.requests_in_flight -= 1
    if reply is None:
        return web.Response(status=204)
    return web.Response(body=reply, content_type="application/json")


ALL_BACKLOG = 10_000  # events an all-workflows stream from 0 starts with: the latest ones


async def _stream_events(state: ServerState, request: web.Request) -> web.StreamResponse:
    """A workflow's events (`workflow_id`), or every workflow's (`all=1`), after `after`, then live."""
    every = request.query.get("all", "0") == "1"
    try:
        wf = 0 if every else int(request.query["workflow_id"])
        after = int(request.query.get("after", "0"))
        if not ((every or 0 < wf < 2**63) and 0 <= after < 2**63):
            raise ValueError
    except (KeyError, ValueError):
        return web.json_response(
            {"error": "workflow_id (a positive integer) or all=1 is required; after must be a non-negative integer"},
            status=400,
        )
    until_done = request.query.get("until_done", "0") == "1"
    if every and until_done:
        return web.json_response({"error": "until_done applies to one workflow: not with all=1"}, status=400)
    kinds = frozenset(k for k in request.query.get("kinds", "").split(",") if k)
    label = request.query.get("serve_label")
    if label is not None and (problem := label_problem(label) or ("all=1" if every else None)):
        return web.json_response({"error": f"serve_label: {problem}"}, status=400)
    serving = state.labels.serving(wf, label) if label is not None else contextlib.nullcontext()
    with serving:
        return await _stream_followed(state, request, wf, after, every, until_done, kinds)


async def _stream_followed(
    state: ServerState,
    request: web.Request,
    wf: int,
    after: int,
    every: bool,
    until_done: bool,
    kinds: frozenset[str],
) -> web.StreamResponse:
    sub = state.bus.subscribe(
        f"events:{wf or 'all'}",
        maxsize=state.config.watch_queue_size,
        accept=lambda e: (every or e.workflow_id == wf) and (not kinds or e.kind in kinds),
    )
    state.streams[sub] = wf  # an attached client
    try:
        try:
            if every and after == 0:
                backlog = await state.queries.all_events(limit=ALL_BACKLOG, latest=True)
            elif every:
                backlog = await state.queries.all_events(after, limit=BACKLOG_PAGE)
            else:
                backlog = await state.queries.events(wf, after, limit=BACKLOG_PAGE)
        except NotFound as e:
            return web.json_response({"error": e.message}, status=404)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        last = await _write_backlog(state, resp, backlog, wf, kinds, after, page=not (every and after == 0))
        if last is None:  # deleted meanwhile
            return resp
        # The log may hold idle points the workflow has left since (a reset, a retried job):
        # the stream ends at the next one, or now if the workflow is idle now. Events committed
        # after the backlog was read are already queued for us, so none is missed.
        if until_done and (await state.queries.workflow(wf)).state != "active":
            return resp
        while not state.stopping.is_set():
            get = asyncio.ensure_future(sub.get())
            cut = asyncio.ensure_future(sub.overflowed.wait())
            stop = asyncio.ensure_future(state.stopping.wait())
            done, pending = await asyncio.wait(
                {get, cut, stop}, return_when=asyncio.FIRST_COMPLETED, timeout=PEER_CHECK_SECONDS
            )
            for f in pending:
                f.cancel()
            if not done:  # quiet: is the reader still there? (it may be serving a label)
                if request.transport is None or request.transport.is_closing():
                    break
                continue
            if get not in done:
                if sub.overflowed.is_set():
                    log.warning("watcher_cut_off", workflow_id=wf, last_seq=last, reason="fell behind")
                break
            batch = [e for e in [get.result(), *sub.drain()] if e.seq > last]  # not those in the backlog
            if batch:
                try:
                    await asyncio.wait_for(
                        resp.write(b"".join(state.line(e) for e in batch)), state.config.watch_write_timeout
                    )
                except TimeoutError:
                    log.warning("watcher_cut_off", workflow_id=wf, last_seq=last, reason="not reading")
                    break
                last = batch[-1].seq
            if until_done and any(isinstance(e, IDLE) for e in batch):
                break
        return resp
    except ConnectionResetError:
        return resp
    finally:
        state.streams.pop(sub, None)
        sub.close()


async def _write_backlog(
    state: ServerState,
    resp: web.StreamResponse,
    backlog: list[Event],
    wf: int,
    kinds: frozenset[str],
    after: int,
    *,
    page: bool,
) -> int | None:
    """The backlog a page at a time, so a million-job workflow's events are never held at once.
    The last sequence number written, or None if the workflow was deleted meanwhile."""
    last = after
    while backlog:
        for event in backlog:
            last = event.seq
            if not kinds or event.kind in kinds:
                await resp.write(state.line(event))
        if len(backlog) < BACKLOG_PAGE or not page:
            break
        try:
            if wf == 0:
                backlog = await state.queries.all_events(last, limit=BACKLOG_PAGE)
            else:
                backlog = await state.queries.events(wf, last, limit=BACKLOG_PAGE)
        except NotFound:
            return None
    return last
