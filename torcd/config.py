"""Every setting of the daemon, read in one place: flags first, then the environment, then defaults."""

from __future__ import annotations

import argparse
import os
from typing import Any

import msgspec

from torcd.core.resources import gpu_ids, parse_memory
from torcd.paths import Paths, resolve


class Config(msgspec.Struct, frozen=True):
    paths: Paths
    max_cpus: int  # the CPU budget of local jobs
    gpus: tuple[str, ...] = ()  # the GPU devices local jobs are given, each to one job at a time
    max_memory: int = 1 << 62  # bytes: the memory budget of local jobs with a memory limit
    shutdown_grace: float = 10.0  # seconds between TERM and KILL for jobs at shutdown
    listen: tuple[str, int] | None = None  # the TCP door, for Slurm workers
    advertise_url: str | None = None
    tls: tuple[str, str] | None = None  # (certificate, key) of the TCP door
    slurm_poll_interval: float = 5.0
    heartbeat_timeout: float = 60.0
    auto_schedule_interval: float = 10.0
    worker_poll_interval: float = 1.0
    metrics: bool = False
    dashboard_port: int | None = None  # serve the web dashboard on 127.0.0.1 (0: any free port)
    autostarted: bool = False  # started by a client; `torcctl run` stops it when nobody needs it
    max_request_bytes: int = 64 * 1024 * 1024
    # A watcher this many events behind, or whose socket takes this long to accept a write, is
    # cut off: it resumes with after=SEQ rather than hold the daemon back.
    watch_queue_size: int = 10_000
    watch_write_timeout: float = 10.0
    # The TCP door: at most this many connections (fewer if descriptors are short), this many from
    # one address; a connection with no request in progress for `idle_timeout` seconds is closed,
    # and a request body must arrive within `body_timeout` seconds.
    max_tcp_connections: int = 1024
    max_connections_per_peer: int = 64
    idle_timeout: float = 30.0
    body_timeout: float = 30.0
    # Every database call hops to aiosqlite's thread and back; with the default 5 ms switch
    # interval a busy loop makes each hop wait for the GIL.
    switch_interval: float = 0.0002
    log_level: str = "info"
    log_format: str = "auto"

    @property
    def db_path(self) -> str:
        return os.path.join(self.paths.state_dir, "torcd.store.db")

    @property
    def token_file(self) -> str:
        return os.path.join(self.paths.state_dir, "token")

    @property
    def credentials_dir(self) -> str:
        return os.path.join(self.paths.state_dir, "credentials")

    @property
    def exit_log(self) -> str:
        return os.path.join(self.paths.state_dir, "exits.log")


def from_args(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """The configuration from `torcd`'s flags and the TORCD_* environment (argparse exits on bad flags)."""
    env = os.environ if environ is None else environ
    args = parse_args(argv, env)
    try:
        gpus = gpu_ids(dict(env), _nvidia_smi(), args.gpus)
    except ValueError as e:
        raise SystemExit(f"torcd: {e}") from None
    try:
        limits: dict[str, Any] = dict(
            max_request_bytes=int(env.get("TORCD_MAX_REQUEST_BYTES", 64 * 1024 * 1024)),
            watch_queue_size=int(env.get("TORCD_WATCH_QUEUE_SIZE", 10_000)),
            watch_write_timeout=float(env.get("TORCD_WATCH_WRITE_TIMEOUT", 10.0)),
            switch_interval=float(env.get("TORCD_SWITCH_INTERVAL", 0.0002)),
            max_tcp_connections=int(env.get("TORCD_MAX_TCP_CONNECTIONS", 1024)),
            max_connections_per_peer=int(env.get("TORCD_MAX_CONNECTIONS_PER_PEER", 64)),
            idle_timeout=float(env.get("TORCD_IDLE_TIMEOUT", 30.0)),
            body_timeout=float(env.get("TORCD_BODY_TIMEOUT", 30.0)),
        )
    except ValueError as e:
        raise SystemExit(f"torcd: a TORCD_* environment variable is not a number: {e}") from None
    return Config(
        resolve(args.socket, args.state_dir),
        args.max_parallel_jobs or os.cpu_count() or 1,
        tuple(gpus),
        args.memory if args.memory is not None else _machine_memory(),
        args.shutdown_grace,
        listen=args.listen,
        advertise_url=args.advertise_url,
        tls=(os.path.abspath(args.tls_cert), os.path.abspath(args.tls_key)) if args.tls_cert else None,
        slurm_poll_interval=args.slurm_poll_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        auto_schedule_interval=args.auto_schedule_interval,
        metrics=args.metrics,
        dashboard_port=args.dashboard_port,
        autostarted=args.autostarted,
        log_level=args.log_level,
        log_format=args.log_format,
        **limits,
    )


def parse_args(argv: list[str] | None, env) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="torcd", description="The torc workflow daemon (one per user).")
    _add_local_options(ap, env)
    _add_remote_options(ap)
    _add_process_options(ap, env)
    args = ap.parse_args(argv)
    _check_args(ap, args)
    return args


def _add_local_options(ap: argparse.ArgumentParser, env) -> None:
    """Where the daemon lives and what the local jobs may use."""
    ap.add_argument(
        "--socket",
        help="Unix socket path (default: $TORCD_SOCKET or "
        "$XDG_RUNTIME_DIR/torcd/torcd.sock, else /tmp/torcd-$UID/torcd.sock)",
    )
    ap.add_argument("--state-dir", help="database directory (default: $TORCD_STATE_DIR or $XDG_STATE_HOME/torcd)")
    ap.add_argument(
        "--cpus",
        "--max-parallel-jobs",
        dest="max_parallel_jobs",
        type=int,
        default=None,
        metavar="N",
        help="CPU budget for local jobs (default: number of CPUs)",
    )
    ap.add_argument(
        "--memory",
        default=env.get("TORCD_MEMORY"),
        metavar="SIZE",
        help="memory budget for local jobs, like 64g: jobs whose memory limits would together "
        "exceed it wait (default: $TORCD_MEMORY, else this machine's memory)",
    )
    ap.add_argument(
        "--gpus",
        type=int,
        default=None,
        metavar="N",
        help="GPUs local jobs may use, devices 0..N-1 (default: $TORCD_GPUS, else this process's "
        "CUDA_VISIBLE_DEVICES, else what `nvidia-smi -L` lists)",
    )
    ap.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long running jobs get between SIGTERM and SIGKILL at shutdown",
    )


def _add_remote_options(ap: argparse.ArgumentParser) -> None:
    """Serving workers over TCP, and watching Slurm allocations and their workers."""
    ap.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="also serve JSON-RPC over TCP (for Slurm workers); requests need the bearer token in STATE_DIR/token",
    )
    ap.add_argument(
        "--tls-cert", metavar="PEM", help="serve --listen over TLS with this certificate (workers are told to trust it)"
    )
    ap.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    ap.add_argument(
        "--advertise-url",
        metavar="URL",
        help="URL workers use to reach --listen (default: http://HOST:PORT, with this host's name for 0.0.0.0)",
    )
    ap.add_argument(
        "--slurm-poll-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how often to check allocations with squeue",
    )
    ap.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a worker silent this long is lost; its jobs go through their failure handlers",
    )
    ap.add_argument(
        "--auto-schedule-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often auto-schedule policies are evaluated (also on relevant events)",
    )


def _add_process_options(ap: argparse.ArgumentParser, env) -> None:
    """Metrics, logs, and whether a client started this daemon."""
    ap.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics at GET /metrics (on the socket, and on --listen with the token)",
    )
    ap.add_argument(
        "--dashboard-port",
        type=int,
        metavar="PORT",
        help="also serve the web dashboard on 127.0.0.1:PORT (0: any free port); its URL, with the "
        "login token, is logged and written to STATE_DIR/dashboard.url",
    )
    ap.add_argument("--autostarted", action="store_true", help=argparse.SUPPRESS)  # by a client, for a run
    ap.add_argument(
        "--log-level", default=env.get("TORCD_LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"]
    )
    ap.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check what argparse cannot, and turn --memory and --listen into values; ap.error exits."""
    if args.gpus is not None and args.gpus < 0:
        ap.error("--gpus must be 0 or more")
    if args.dashboard_port is not None and not 0 <= args.dashboard_port <= 65535:
        ap.error("--dashboard-port must be 0 (any free port) to 65535")
    if args.max_parallel_jobs is not None and args.max_parallel_jobs < 1:
        ap.error("--cpus must be at least 1")
    if args.memory is not None:
        try:
            args.memory = parse_memory(str(args.memory))
        except ValueError as e:
            ap.error(f"--memory: {e}")
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


def _nvidia_smi() -> list[str] | None:
    """`nvidia-smi -L`'s lines, when there is one that answers."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None


def _machine_memory() -> int:
    import psutil

    return psutil.virtual_memory().total
