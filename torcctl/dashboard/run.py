"""Start the dashboard: on 127.0.0.1 (port 0: any free one), for whatever daemon `connect` reaches.
`torcctl dashboard` runs it until interrupted; `torcd --dashboard-port` runs it beside its doors."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
import webbrowser
from collections.abc import Callable

from aiohttp import web

from torcctl.api.client import Client
from torcctl.dashboard.server import DaemonCalls, Dashboard
from torcctl.errors import TorcError

HOST = "127.0.0.1"


class DashboardError(TorcError):
    pass


async def open_dashboard(connect: Callable[[], Client], port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve the dashboard; return its runner (cleanup stops it) and its URL with the token."""
    dash = Dashboard(DaemonCalls(connect))
    runner = web.AppRunner(dash.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        sock = socket.create_server((HOST, port), backlog=128)
    except OSError as e:
        await runner.cleanup()
        why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be opened: {e.strerror or e}"
        raise DashboardError(f"port {port} on {HOST} {why}; pick another with --port (0: any free one)") from None
    bound = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    return runner, f"http://{HOST}:{bound}/?token={dash.sessions.token}"


def has_display() -> bool:
    """A graphical browser could open here. On a login node over SSH there is none, and Python's
    webbrowser would start a text browser (lynx, w3m) in the terminal instead."""
    return sys.platform == "darwin" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def serve_until_stopped(connect: Callable[[], Client], port: int, browser: bool) -> int:
    """`torcctl dashboard`: the URL on the first line of output, a browser unless told not to."""

    async def main() -> None:
        runner, url = await open_dashboard(connect, port)
        print(url, flush=True)
        print("the dashboard serves until Ctrl-C; from a laptop, see docs/dashboard.md (an SSH tunnel)", flush=True)
        if browser and has_display():
            webbrowser.open(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except DashboardError as e:
        print(f"torcctl dashboard: {e}", file=sys.stderr)
        return 2
    return 0
