"""`torcd`: run the daemon in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from torcd import logging as torc_logging
from torcd.errors import TorcError
from torcd.paths import resolve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="torcd", description="The torc workflow daemon (one per user).")
    ap.add_argument("--socket", help="Unix socket path (default: $TORCD_SOCKET or "
                    "$XDG_RUNTIME_DIR/torcd/torcd.sock, else /tmp/torcd-$UID/torcd.sock)")
    ap.add_argument("--state-dir", help="database directory (default: $TORCD_STATE_DIR or "
                    "$XDG_STATE_HOME/torcd)")
    ap.add_argument("--max-parallel-jobs", type=int, default=None, metavar="CPUS",
                    help="CPU budget for local jobs (default: number of CPUs)")
    ap.add_argument("--shutdown-grace", type=float, default=10.0, metavar="SECONDS",
                    help="how long running jobs get between SIGTERM and SIGKILL at shutdown")
    ap.add_argument("--listen", metavar="HOST:PORT",
                    help="also serve JSON-RPC over TCP (for Slurm workers); requests need the bearer token "
                         "in STATE_DIR/token")
    ap.add_argument("--tls-cert", metavar="PEM", help="serve --listen over TLS with this certificate "
                    "(workers are told to trust it)")
    ap.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    ap.add_argument("--advertise-url", metavar="URL", help="URL workers use to reach --listen "
                    "(default: http://HOST:PORT, with this host's name for 0.0.0.0)")
    ap.add_argument("--slurm-poll-interval", type=float, default=5.0, metavar="SECONDS",
                    help="how often to check allocations with squeue")
    ap.add_argument("--heartbeat-timeout", type=float, default=60.0, metavar="SECONDS",
                    help="a worker silent this long is lost; its jobs go through their failure handlers")
    ap.add_argument("--auto-schedule-interval", type=float, default=10.0, metavar="SECONDS",
                    help="how often auto-schedule policies are evaluated (also on relevant events)")
    ap.add_argument("--metrics", action="store_true",
                    help="serve Prometheus metrics at GET /metrics (on the socket, and on --listen with the token)")
    ap.add_argument("--autostarted", action="store_true", help=argparse.SUPPRESS)  # by a client, for a run
    ap.add_argument("--log-level", default=os.environ.get("TORCD_LOG_LEVEL", "info"),
                    choices=["debug", "info", "warning", "error"])
    ap.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    args = ap.parse_args(argv)
    if args.max_parallel_jobs is not None and args.max_parallel_jobs < 1:
        ap.error("--max-parallel-jobs must be at least 1")
    if args.listen is not None:
        host, sep, port = args.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            ap.error(f"--listen must be HOST:PORT, got {args.listen!r}")
        args.listen = (host.strip("[]") or "0.0.0.0", int(port))
    if (args.tls_cert is None) != (args.tls_key is None):
        ap.error("--tls-cert and --tls-key go together")
    if args.tls_cert and args.listen is None:
        ap.error("--tls-cert needs --listen")
    for name in ("slurm_poll_interval", "heartbeat_timeout", "auto_schedule_interval"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torc_logging.configure(args.log_level, None if args.log_format == "auto" else args.log_format == "json")
    from torcd.daemon import Daemon
    from torcd.services.processes import prepare_to_start_processes

    prepare_to_start_processes()

    daemon = Daemon(resolve(args.socket, args.state_dir), args.max_parallel_jobs, args.shutdown_grace,
                    listen=args.listen, advertise_url=args.advertise_url,
                    slurm_poll_interval=args.slurm_poll_interval, heartbeat_timeout=args.heartbeat_timeout,
                    auto_schedule_interval=args.auto_schedule_interval, metrics=args.metrics,
                    autostarted=args.autostarted,
                    tls=(os.path.abspath(args.tls_cert), os.path.abspath(args.tls_key)) if args.tls_cert else None)
    try:
        asyncio.run(daemon.run())
    except TorcError as e:
        print(f"torcd: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
