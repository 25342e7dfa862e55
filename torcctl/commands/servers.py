"""Commands about processes rather than workflows: is the daemon up, the MCP server, a worker."""

from __future__ import annotations

from torcctl.api.client import Client
from torcctl.commands import UsageError
from torcctl.render import print_json


def ping(client: Client, args) -> int:
    info = client.call("ping")
    if args.json:
        print_json(info)
    else:
        print(f"torcd {info['version']} (pid {info['pid']}) on {info['socket']}, up {info['uptime']:.1f}s")
    return 0


def mcp(client: Client, args) -> int:
    try:
        from torcctl.mcp.server import serve
    except ImportError as e:
        raise UsageError(
            f"torcctl mcp needs the mcp package ({e.name} is missing): pip install 'torc-py[mcp]'"
        ) from None
    return serve(client)


def dashboard(client: Client, args) -> int:
    """Serve the web dashboard for this daemon on 127.0.0.1 until interrupted."""
    from torcctl.api.client import Client as Connection
    from torcctl.dashboard.run import serve_until_stopped

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 (any free port) to 65535, not {args.port}")
    from torcctl.transport import TcpTransport

    if isinstance(client.transport, TcpTransport):
        raise UsageError("the dashboard runs on the daemon's host, through its Unix socket (not --url)")
    client.ensure_daemon()
    socket = client.transport.socket_path

    def connect() -> Client:  # one more connection to the same daemon
        return Connection(socket, autostart=False)

    return serve_until_stopped(connect, args.port, browser=not args.no_browser)


def worker(client: Client, args) -> int:
    import asyncio

    from torcctl.worker.run import WorkerError, run_worker
    from torcd import log_config as torc_logging

    if not args.url:
        raise UsageError("worker needs --url (or TORC_API_URL)")
    torc_logging.configure("info")
    try:
        return asyncio.run(run_worker(args))
    except WorkerError as e:
        raise UsageError(str(e)) from None


def run_function(client: Client, args) -> int:
    """A job's Python function: an Executor call (--call DIR N), or Torc's map_function_to_jobs."""
    if args.call is not None:
        from torcctl.api.calls import run_call

        directory, number = args.call
        if not (number.isascii() and number.isdigit()):
            raise UsageError(f"--call takes a folder and a call number, got {number!r}")
        return run_call(directory, int(number))
    from torcctl.api.functions import run_function as run

    try:
        return run()
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_postprocess(client: Client, args) -> int:
    """The post-process job of map_function_to_jobs: its function on every result."""
    from torcctl.api.functions import run_postprocess as run

    try:
        return run()
    except ValueError as e:
        raise UsageError(str(e)) from None
