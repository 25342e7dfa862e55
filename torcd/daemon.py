"""The daemon's life: open its doors and state, wire the services, serve, and shut down cleanly.

Settings come from one `Config`; the RPC methods live in `handlers`, the doors in `server`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
import time

import structlog
from aiohttp import web

from torcd import protocol as p
from torcd.api import door_limits, doors
from torcd.api.door_limits import ConnectionGuard, GuardedSockSite, connection_cap
from torcd.api.handlers import METHODS, Handlers, StoreParts
from torcd.api.server import ServerState, build_app
from torcd.bus import EventBus
from torcd.config import Config
from torcd.errors import DaemonError
from torcd.ownership import open_private_file
from torcd.services.actions import ActionRunner
from torcd.services.allocations import AllocationService
from torcd.services.autoscheduler import AutoScheduler
from torcd.services.dispatcher import Dispatcher
from torcd.services.exit_log import ExitLog
from torcd.services.recovery import RecoveryRunner
from torcd.services.resource_plots import ResourcePlotWriter
from torcd.services.retry_engine import RetryEngine
from torcd.services.workers import WorkerService
from torcd.store.store import Store, StoreError
from torcd.systemd import Notifier

log = structlog.get_logger("torcd")
VERSION = "0.1.0"
REQUEST_GRACE = 5.0  # seconds a request in flight at shutdown may still take


async def _bounded(step, what: str, seconds: float = REQUEST_GRACE + 2) -> None:
    """A step of stopping that must not hold the stop up (the doors, the services): past its time
    it is left, with a log line naming it, so that SIGTERM always ends the daemon."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.warning("stop_step_overran", step=what, seconds=seconds)
        task.cancel()
    elif not task.cancelled() and task.exception() is not None:
        raise task.exception()


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.socket_path = config.paths.socket
        self.api_url = f"unix://{self.socket_path}"
        self.tcp_url: str | None = None
        self.dashboard: web.AppRunner | None = None
        self.bus = EventBus()
        self.stopping = asyncio.Event()
        self.started = time.time()
        self.systemd = Notifier()
        self._socket_passed = False

    async def run(self, ready: asyncio.Event | None = None) -> None:
        use_pidfd_child_watcher()
        sys.setswitchinterval(self.config.switch_interval)
        self._lock = doors.lock_state_dir(self.config)
        sock, self._socket_passed = doors.listening_socket(self.socket_path)
        if self._socket_passed:  # socket activation: systemd made the socket and keeps it
            self.socket_path = sock.getsockname()
            self.api_url = f"unix://{self.socket_path}"
        try:
            self.store = await Store.open(self.config.db_path)
        except BaseException:
            sock.close()
            self._unlink_socket()
            raise
        try:
            await self._serve(sock, ready)
        finally:
            await self.store.close()
            self._unlink_socket()
            log.info("torcd_stopped")

    def _unlink_socket(self) -> None:
        if not self._socket_passed:
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    def _services(self) -> None:
        cfg, store = self.config, self.store
        store.on_commit = self.bus.publish
        self.retry = RetryEngine(store.execution, self.bus)
        self.recovery = RecoveryRunner(store.execution, self.bus, self.api_url)
        self.dispatcher = Dispatcher(
            store.execution, self.bus, self.api_url, cfg.max_cpus, ExitLog(cfg.exit_log), list(cfg.gpus), cfg.max_memory
        )
        self.allocations = AllocationService(
            store.queries,
            store.slurm,
            store.workers,
            store.execution,
            url=None,
            credentials_dir=cfg.credentials_dir,
            slurm_output_dir=os.path.join(cfg.paths.state_dir, "slurm"),
            ca_file=cfg.tls[0] if cfg.tls else None,
            poll_interval=cfg.slurm_poll_interval,
            heartbeat_timeout=cfg.heartbeat_timeout,
        )
        self.allocations.listen(self.bus)
        self.autoscheduler = AutoScheduler(store.slurm, self.bus, self.allocations, cfg.auto_schedule_interval)
        self.actions = ActionRunner(store.actions, store.queries, self.bus, self.allocations, self.api_url)
        self.workers = WorkerService(store.workers, store.slurm, self.allocations, cfg.worker_poll_interval)
        self.plots = ResourcePlotWriter(store.queries, self.bus)
        parts = StoreParts(
            store.queries,
            store.workflows,
            store.execution,
            store.slurm,
            store.actions,
            store.workers,
            requests=store.db,
        )
        self.handlers = Handlers(parts, cfg, self.allocations, self.workers, self)
        self.state = ServerState(
            cfg, METHODS, self.handlers, store.queries, self.bus, self.stopping, self.workers.credential
        )
        self.state.labels = self.dispatcher.labels

    async def _open_tcp_door(self, runner: web.AppRunner) -> None:
        cfg = self.config
        self.state.admin_token = doors.ensure_token(cfg.token_file)
        assert cfg.listen is not None  # the TCP door opens only with --listen
        sock = doors.tcp_socket(*cfg.listen)
        guard = ConnectionGuard(connection_cap(cfg.max_tcp_connections, cfg.max_cpus), cfg.max_connections_per_peer)
        await GuardedSockSite(
            runner, sock, guard, backlog=door_limits.BACKLOG, ssl_context=doors.tls_context(cfg.tls)
        ).start()
        host, port = sock.getsockname()[:2]
        shown = socket.getfqdn() if host in ("0.0.0.0", "::") else host
        self.tcp_url = cfg.advertise_url or f"{'https' if cfg.tls else 'http'}://{shown}:{port}"
        self.allocations.url = self.tcp_url
        if not cfg.tls and not doors.is_loopback(host):
            log.warning(
                "tcp_door_without_tls",
                address=f"{host}:{port}",
                advice="credentials and job commands cross the network in clear text; "
                "use --tls-cert/--tls-key or a loopback address",
            )

    async def _open_dashboard(self, port: int) -> None:
        """The web dashboard, a client of this daemon's own socket like `torcctl dashboard`."""
        from torcctl.api.client import Client
        from torcctl.dashboard.run import DashboardError, open_dashboard

        socket_path = self.socket_path
        try:
            self.dashboard, url = await open_dashboard(lambda: Client(socket_path, autostart=False), port)
        except DashboardError as e:
            raise DaemonError(f"the dashboard: {e}") from None
        path = os.path.join(self.config.paths.state_dir, "dashboard.url")
        fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "dashboard URL file")
        with os.fdopen(fd, "w") as f:
            f.write(url + "\n")
        log.info("dashboard_started", url=url.split("?")[0], url_file=path)

    async def _serve(self, sock: socket.socket, ready: asyncio.Event | None) -> None:
        self._services()
        # A request still in flight at shutdown (a client that never sends the rest of its body)
        # gets this long, not aiohttp's minute: stopping is bounded.
        runner = web.AppRunner(
            build_app(self.state),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=REQUEST_GRACE,
            keepalive_timeout=self.config.idle_timeout,
        )
        await runner.setup()
        if self.config.listen is not None:
            await self._open_tcp_door(runner)
        # Reconcile from the tables before serving: which workflows have actions first (a commit's
        # settle marks their completion actions), then decisions, then orphans.
        await self.store.workflows.purge_deleted()
        await self.actions.reconcile()
        await self.retry.reconcile()
        await self.dispatcher.reconcile()
        await self.recovery.reconcile()
        await web.SockSite(runner, sock, backlog=doors.BACKLOG).start()  # one runner: shutdown stops both doors
        if self.config.dashboard_port is not None:
            await self._open_dashboard(self.config.dashboard_port)
        loop = asyncio.get_running_loop()
        # SIGHUP (a closed terminal, a logout) stops cleanly like SIGTERM rather than killing us mid-write.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stopping.set)
        log.info(
            "torcd_started",
            socket=self.socket_path,
            state_dir=self.config.paths.state_dir,
            max_parallel_jobs=self.config.max_cpus,
            gpus=list(self.config.gpus),
            pid=os.getpid(),
            doors=self._doors(),
        )
        tasks = [
            asyncio.create_task(s.run(), name=type(s).__name__)
            for s in (
                self.retry,
                self.recovery,
                self.dispatcher,
                self.allocations,
                self.autoscheduler,
                self.actions,
                self.plots,
            )
        ]
        if ready is not None:
            ready.set()
        self.systemd.notify("READY=1", f"STATUS=serving on {self.socket_path}", f"MAINPID={os.getpid()}")
        if self.systemd.watchdog_interval:
            tasks.append(asyncio.create_task(self._watchdog(self.systemd.watchdog_interval), name="watchdog"))
        stop = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        crashed = [t for t in done if t is not stop and t.exception()]
        for t in crashed:
            log.error("service_crashed", service=t.get_name(), error=repr(t.exception()))
        await self._shut_down(runner, tasks, crashed)

    async def _shut_down(self, runner: web.AppRunner, tasks: list[asyncio.Task], crashed: list[asyncio.Task]) -> None:
        log.info("torcd_stopping")
        if self.dashboard is not None:
            await _bounded(self.dashboard.cleanup(), "closing the dashboard")
        self.systemd.notify("STOPPING=1", "STATUS=stopping: terminating running jobs")
        self.stopping.set()
        self.store.db.closing = True  # a write the disk or a lock refuses is no longer tried again
        try:
            await _bounded(runner.shutdown(), "closing connections")
            await self.dispatcher.stop(self.config.shutdown_grace)
            await self.recovery.stop()
            await _bounded(self.plots.flush(), "writing resource plots")
        except (sqlite3.Error, StoreError) as e:
            if not crashed:  # the jobs were stopped; the next start records them from the exit log
                raise StoreError(f"stopping cleanly failed: the database said {getattr(e, 'message', e)}") from None
        finally:
            for t in tasks:
                t.cancel()
            await _bounded(asyncio.gather(*tasks, return_exceptions=True), "stopping the services")
            await _bounded(runner.cleanup(), "closing the doors")
        if crashed:  # the next start reconciles from the tables
            t = crashed[0]
            raise DaemonError(f"stopped because the {t.get_name()} service failed: {t.exception()}")

    def _doors(self) -> list[str]:
        out = [f"unix socket {self.socket_path} (uid {os.getuid()} only: everything)"]
        if self.tcp_url:
            out.append(
                f"tcp {self.tcp_url} ({'TLS' if self.config.tls else 'no TLS'}; admin token: everything, "
                "allocation credentials: workers.* and user_data.* of their workflow)"
            )
        return out

    async def _watchdog(self, interval: float) -> None:
        """Tell systemd we are alive while the event loop turns; a stuck loop gets restarted."""
        while True:
            self.systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # -- what the handlers may ask of the daemon itself ---------------------

    def info(self) -> p.Ping:
        return p.Ping(
            VERSION,
            os.getpid(),
            time.time() - self.started,
            self.socket_path,
            self.config.paths.state_dir,
            self.tcp_url,
            self.config.autostarted,
            self.dispatcher.labels.served(),
        )

    async def stop(self, params: p.Shutdown) -> dict:
        if params.if_idle:
            busy = await self._busy_with(params.ignore_workflow)
            if busy:
                return {"stopping": False, "reason": busy}
        asyncio.get_running_loop().call_later(0.05, self.stopping.set)
        return {"stopping": True}

    async def _busy_with(self, ignore_workflow: int | None) -> str | None:
        """Why stopping now would cost someone work: an active workflow or another client."""
        active = [w.id for w in await self.store.queries.workflows() if w.state == "active" and w.id != ignore_workflow]
        if active:
            return "workflow " + ", ".join(map(str, active)) + (" is" if len(active) == 1 else " are") + " active"
        # The request asking, and streams of the workflow it is about (its own), are not others.
        others = self.state.requests_in_flight - 1 + sum(wf != ignore_workflow for wf in self.state.streams.values())
        if others > 0:
            return f"{others} other client{'s are' if others > 1 else ' is'} attached"
        return None

    async def stop_processes(self, job_ids: list[int]) -> None:
        await asyncio.gather(self.dispatcher.executor.kill(job_ids), self.recovery.kill(job_ids))

    async def stop_actions(self, workflow_id: int, why: str) -> None:
        await self.actions.stop_workflow(workflow_id, why)


def use_pidfd_child_watcher() -> None:
    """Python 3.11 waits for each child in a thread of its own; a pidfd in the loop is cheaper.

    (3.12 and later pick it by themselves.)
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return  # kernel without pidfd
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
