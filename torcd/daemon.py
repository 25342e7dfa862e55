"""The daemon: builds the store, the bus and the services, serves RPC, shuts down cleanly."""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import secrets
import os
import signal
import socket
import sqlite3
import ssl
import stat
import sys
import time
from collections import deque

import msgspec
import structlog
from aiohttp import web

from torcd import protocol as p
from torcd.bus import EventBus
from torcd.core.autoschedule import AutoSchedulePolicy
from torcd.core.status import JobStatus
from torcd.credentials import current_caller, idempotency_key
from torcd.errors import InvalidParams, TorcError, Unauthorized
from torcd.faults import crash_point
from torcd.ownership import check_shared_dir, make_private_dir, open_private_file, owner_name
from torcd.paths import Paths
from torcd.server import build_app
from torcd.services.allocations import AllocationService
from torcd.services.autoscheduler import AutoScheduler
from torcd.services.dispatcher import Dispatcher
from torcd.services.exit_log import ExitLog
from torcd.services.recovery import RecoveryRunner
from torcd.services.retry_engine import RetryEngine
from torcd.spec import parse_spec
from torcd.store import Exit, Store, StoreError
from torcd.systemd import Notifier, passed_socket

log = structlog.get_logger("torcd")
BACKLOG = 1024  # connections waiting to be accepted: hundreds of clients may connect at once
VERSION = "0.1.0"


class DaemonError(TorcError):
    pass


def stderr_tail(path: str | None, lines: int = 5, max_bytes: int = 4096) -> str | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode(errors="replace")
    except (OSError, ValueError):  # unreadable, or a path no file can have (a NUL byte)
        return None
    return "\n".join(deque(data.splitlines(), maxlen=lines)) or None


class Daemon:
    def __init__(self, paths: Paths, max_parallel_jobs: int | None = None, shutdown_grace: float = 10.0,
                 listen: tuple[str, int] | None = None, advertise_url: str | None = None,
                 slurm_poll_interval: float = 5.0, heartbeat_timeout: float = 60.0,
                 auto_schedule_interval: float = 10.0, worker_poll_interval: float = 1.0,
                 metrics: bool = False, autostarted: bool = False, tls: tuple[str, str] | None = None):
        self.paths = paths
        self.autostarted = autostarted  # started by a client; `torcctl run` stops it when nobody needs it
        self.requests_in_flight = 0  # RPC requests being served
        self.streams: dict[object, int] = {}  # open event streams -> the workflow each follows
        self._credentials: dict[int, tuple[str, int]] = {}
        self.metrics = metrics
        self.listen = listen
        self.tls = tls  # (certificate, key) for the TCP door
        self.advertise_url = advertise_url
        self.tcp_url: str | None = None
        self.slurm_poll_interval = slurm_poll_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.auto_schedule_interval = auto_schedule_interval
        self.worker_poll_interval = worker_poll_interval
        self.token_file = os.path.join(paths.state_dir, "token")
        self.db_path = os.path.join(paths.state_dir, "torcd.db")
        self.token: str | None = None
        self.max_request_bytes = int(os.environ.get("TORCD_MAX_REQUEST_BYTES", 64 * 1024 * 1024))
        self.max_cpus = max_parallel_jobs or os.cpu_count() or 1
        self.shutdown_grace = shutdown_grace
        self.bus = EventBus()
        self.stopping = asyncio.Event()
        # A watcher this many events behind, or whose socket takes this long to accept a write,
        # is cut off: it resumes with after=SEQ rather than hold the daemon back.
        self.watch_queue_size = int(os.environ.get("TORCD_WATCH_QUEUE_SIZE", 10_000))
        self.watch_write_timeout = float(os.environ.get("TORCD_WATCH_WRITE_TIMEOUT", 10.0))
        self.started = time.time()
        self.api_url = f"unix://{paths.socket}"
        self._lock_file = None
        self.systemd = Notifier()
        self._socket_passed = False

    # -- lifecycle ---------------------------------------------------------

    def _lock_state_dir(self) -> None:
        try:
            make_private_dir(self.paths.state_dir, "the state dir")
            lock_path = os.path.join(self.paths.state_dir, "torcd.lock")
            self._lock_file = os.fdopen(open_private_file(lock_path, os.O_RDWR | os.O_APPEND, "the lock file"),
                                        "a+")
            # Made private before SQLite creates it (its WAL and shm files take the same mode).
            os.close(open_private_file(self.db_path, os.O_RDWR, "the database"))
        except OSError as e:
            raise DaemonError(f"cannot use the state dir {self.paths.state_dir}: {e.strerror}"
                              + (f" ({e.filename})" if e.filename else "")) from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            other = self._lock_file.read().strip() or "?"
            raise DaemonError(f"another torcd (pid {other}) is using the state dir {self.paths.state_dir}") from None
        self._lock_file.truncate(0)
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def _bind_socket(self) -> socket.socket:
        path = self.paths.socket
        try:
            return self._bind_socket_at(path)
        except OSError as e:
            raise DaemonError(f"cannot listen on {path}: {e.strerror}") from None

    def _bind_socket_at(self, path: str) -> socket.socket:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            make_private_dir(parent, "the socket's directory")
        else:  # the user's choice (a project dir, /tmp): keep its mode, but it must not be a trap
            check_shared_dir(parent, "the socket's directory")
        if os.path.lexists(path):
            st = os.lstat(path)
            if st.st_uid != os.getuid():
                raise DaemonError(f"{path} belongs to {owner_name(st.st_uid)}, not to you; remove it "
                                  "or choose another --socket")
            if not stat.S_ISSOCK(st.st_mode):
                raise DaemonError(f"{path} exists and is not a socket; remove it or choose another --socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: nobody is listening
            else:
                raise DaemonError(f"another torcd is already listening on {path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(BACKLOG)
        sock.setblocking(False)
        return sock

    async def run(self, ready: asyncio.Event | None = None) -> None:
        use_pidfd_child_watcher()
        # Every database call hops to aiosqlite's thread and back; with the default 5 ms
        # switch interval a busy loop makes each hop wait for the GIL.
        sys.setswitchinterval(float(os.environ.get("TORCD_SWITCH_INTERVAL", "0.0002")))
        self._lock_state_dir()
        sock = self._listening_socket()
        try:
            self.store = await Store.open(self.db_path)
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

    def _listening_socket(self) -> socket.socket:
        sock = passed_socket()
        if sock is None:
            return self._bind_socket()
        # Socket activation: systemd made the socket and keeps it; we only serve on it.
        self._socket_passed = True
        self.paths = Paths(sock.getsockname(), self.paths.state_dir)
        self.api_url = f"unix://{self.paths.socket}"
        return sock

    def _unlink_socket(self) -> None:
        if not self._socket_passed:
            try:
                os.unlink(self.paths.socket)
            except FileNotFoundError:
                pass

    async def _serve(self, sock: socket.socket, ready: asyncio.Event | None) -> None:  # noqa: C901
        self.store.on_commit = self.bus.publish
        self.retry = RetryEngine(self.store, self.bus)
        self.recovery = RecoveryRunner(self.store, self.bus, self.api_url)
        self.dispatcher = Dispatcher(self.store, self.bus, self.api_url, self.max_cpus,
                                     ExitLog(os.path.join(self.paths.state_dir, "exits.log")))
        app = build_app(self)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        if self.listen is not None:
            self.token = ensure_token(self.token_file)
            site = web.TCPSite(runner, self.listen[0], self.listen[1], reuse_address=True, backlog=BACKLOG,
                               ssl_context=self._tls_context())
            await site.start()
            host, port = site._server.sockets[0].getsockname()[:2]
            shown = socket.getfqdn() if host in ("0.0.0.0", "::") else host
            self.tcp_url = self.advertise_url or f"{'https' if self.tls else 'http'}://{shown}:{port}"
            if not self.tls and not _is_loopback(host):
                log.warning("tcp_door_without_tls", address=f"{host}:{port}",
                            advice="credentials and job commands cross the network in clear text; "
                                   "use --tls-cert/--tls-key or a loopback address")
        self.allocations = AllocationService(self.store, url=self.tcp_url,
                                             credentials_dir=os.path.join(self.paths.state_dir, "credentials"),
                                             ca_file=self.tls[0] if self.tls else None,
                                             poll_interval=self.slurm_poll_interval,
                                             heartbeat_timeout=self.heartbeat_timeout)
        self.autoscheduler = AutoScheduler(self.store, self.bus, self.allocations, self.auto_schedule_interval)
        # Reconcile from the tables before serving: decisions first, then orphans.
        await self.retry.reconcile()
        await self.dispatcher.reconcile()
        await self.recovery.reconcile()
        await web.SockSite(runner, sock, backlog=BACKLOG).start()  # one runner: shutdown stops both doors
        loop = asyncio.get_running_loop()
        # SIGHUP (a closed terminal, a logout) stops cleanly like SIGTERM rather than killing us mid-write.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stopping.set)
        doors = [f"unix socket {self.paths.socket} (uid {os.getuid()} only: everything)"]
        if self.tcp_url:
            doors.append(f"tcp {self.tcp_url} ({'TLS' if self.tls else 'no TLS'}; admin token: everything, "
                         "allocation credentials: workers.* of their workflow)")
        log.info("torcd_started", socket=self.paths.socket, state_dir=self.paths.state_dir,
                 max_parallel_jobs=self.max_cpus, pid=os.getpid(), doors=doors)
        tasks = [asyncio.create_task(s.run(), name=type(s).__name__)
                 for s in (self.retry, self.recovery, self.dispatcher, self.allocations, self.autoscheduler)]
        if ready is not None:
            ready.set()
        self.systemd.notify("READY=1", f"STATUS=serving on {self.paths.socket}", f"MAINPID={os.getpid()}")
        if self.systemd.watchdog_interval:
            tasks.append(asyncio.create_task(self._watchdog(self.systemd.watchdog_interval), name="watchdog"))
        stop = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        crashed = [t for t in done if t is not stop and t.exception()]
        for t in crashed:
            log.error("service_crashed", service=t.get_name(), error=repr(t.exception()))
        log.info("torcd_stopping")
        self.systemd.notify("STOPPING=1", "STATUS=stopping: terminating running jobs")
        self.stopping.set()
        try:
            await runner.shutdown()
            await self.dispatcher.stop(self.shutdown_grace)
            await self.recovery.stop()
        except sqlite3.Error as e:
            if not crashed:
                raise StoreError(f"stopping cleanly failed: the database said {e}") from None
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
        if crashed:  # the next start reconciles from the tables
            t = crashed[0]
            raise DaemonError(f"stopped because the {t.get_name()} service failed: {t.exception()}")

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(*self.tls)
        except (OSError, ssl.SSLError) as e:
            raise DaemonError(f"cannot load the TLS certificate {self.tls[0]} and key {self.tls[1]}: {e}") from None
        return ctx

    async def _watchdog(self, interval: float) -> None:
        """Tell systemd we are alive while the event loop turns; a stuck loop gets restarted."""
        while True:
            self.systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # -- RPC methods -------------------------------------------------------

    async def ping(self, _: p.NoParams) -> p.Ping:
        return p.Ping(VERSION, os.getpid(), time.time() - self.started, self.paths.socket, self.paths.state_dir,
                      self.tcp_url, self.autostarted)

    async def request_shutdown(self, params: p.Shutdown) -> dict:
        if params.if_idle:
            busy = await self._busy_with(params.ignore_workflow)
            if busy:
                return {"stopping": False, "reason": busy}
        asyncio.get_running_loop().call_later(0.05, self.stopping.set)
        return {"stopping": True}

    async def _busy_with(self, ignore_workflow: int | None) -> str | None:
        """Why stopping now would cost someone work: an active workflow or another client."""
        active = [w.id for w in await self.store.workflows() if w.state == "active" and w.id != ignore_workflow]
        if active:
            return "workflow " + ", ".join(map(str, active)) + (" is" if len(active) == 1 else " are") + " active"
        # The request asking, and streams of the workflow it is about (its own), are not others.
        others = self.requests_in_flight - 1 + sum(wf != ignore_workflow for wf in self.streams.values())
        if others > 0:
            return f"{others} other client{'s are' if others > 1 else ' is'} attached"
        return None

    async def create_workflow(self, params: p.CreateWorkflow) -> p.WorkflowSummary:
        if not os.path.isabs(params.cwd) or not os.path.isdir(params.cwd):
            raise InvalidParams(f"cwd must be an existing absolute directory, got {params.cwd!r}",
                                {"field": "$.cwd"})
        spec = await asyncio.to_thread(parse_spec, params.spec_text, params.spec_path)
        if params.executor == "slurm" and self.tcp_url is None:
            raise InvalidParams("Slurm workers need a TCP door: start torcd with --listen HOST:PORT",
                                {"field": "$.executor"})
        wf = await self.store.create_workflow(spec, params.cwd, params.spec_path, params.executor, params.account,
                                              key=idempotency_key.get())
        crash_point("after_create")
        log.info("workflow_created", workflow_id=wf, jobs=len(spec.jobs))
        return await self.store.workflow(wf)

    async def list_workflows(self, _: p.NoParams) -> list[p.WorkflowSummary]:
        return await self.store.workflows()

    async def show_workflow(self, params: p.WorkflowRef) -> p.WorkflowSummary:
        return await self.store.workflow(params.workflow_id)

    async def cancel_workflow(self, params: p.WorkflowRef) -> p.WorkflowSummary:
        running = await self.store.cancel_workflow(params.workflow_id)
        await asyncio.gather(self.dispatcher.executor.kill(running), self.recovery.kill(running))
        return await self.store.workflow(params.workflow_id)

    async def delete_workflow(self, params: p.WorkflowRef) -> dict:
        await self.store.delete_workflow(params.workflow_id, key=idempotency_key.get())
        return {"deleted": params.workflow_id}

    async def reset_status(self, params: p.ResetStatus) -> dict:
        n = await self.store.reset_status(params.workflow_id, params.failed_only, key=idempotency_key.get())
        return {"reset": n}

    async def list_jobs(self, params: p.ListJobs) -> list[p.JobInfo]:
        status = None
        if params.status is not None:
            try:
                status = JobStatus.parse(params.status)
            except ValueError as e:
                raise InvalidParams(str(e), {"field": "$.status"}) from None
        jobs = await self.store.jobs(params.workflow_id, status, params.limit, params.offset)
        for job in jobs:
            if job.status in ("pending_failed", "failed"):
                job.stderr_tail = stderr_tail(job.stderr_path)
        return jobs

    async def show_job(self, params: p.JobRef) -> p.JobInfo:
        job = await self.store.job(params.job_id)
        job.stderr_tail = stderr_tail(job.stderr_path)
        return job

    async def job_attempts(self, params: p.JobRef) -> list[p.AttemptInfo]:
        return await self.store.attempts(params.job_id)

    async def retry_jobs(self, params: p.Classify) -> p.ClassifyResult:
        return await self._classify_all(params, "retry")

    async def fail_jobs(self, params: p.Classify) -> p.ClassifyResult:
        return await self._classify_all(params, "fail")

    async def _classify_all(self, params: p.Classify, action: str) -> p.ClassifyResult:
        decisions = [(j, action, params.reason) for j in dict.fromkeys(params.job_ids)]
        return p.ClassifyResult(await self.store.classify(decisions, params.source, key=idempotency_key.get()))

    async def classify_jobs(self, params: p.ClassifyMany) -> p.ClassifyResult:
        decisions = [(c.job_id, c.action, c.reason) for c in params.classifications]
        return p.ClassifyResult(await self.store.classify(decisions, params.source, params.workflow_id,
                                                          key=idempotency_key.get()))

    async def list_events(self, params: p.ListEvents) -> list[p.Event]:
        return await self.store.events(params.workflow_id, params.after, params.limit)

    async def set_auto_schedule(self, params: p.SetAutoSchedule) -> dict:
        policy = AutoSchedulePolicy(params.enabled, params.threshold, params.cooldown, params.stranded_timeout)
        await self.store.set_auto_schedule(params.workflow_id, policy)
        return msgspec.structs.asdict(policy)

    async def submit_allocations(self, params: p.SubmitAllocations) -> list[p.AllocationInfo]:
        ids = await self.allocations.submit(params.workflow_id, "submitted by torcctl", count=params.count)
        return [a for a in await self.store.allocations(params.workflow_id) if a.id in ids]

    async def list_allocations(self, params: p.WorkflowRef) -> list[p.AllocationInfo]:
        await self.store.workflow(params.workflow_id)
        return await self.store.allocations(params.workflow_id)

    async def allocation_credential(self, aid: int) -> tuple[str, int] | None:
        """(hash, workflow id) of an allocation's worker credential; cached, they never change."""
        known = self._credentials.get(aid)
        if known is None:
            known = await self.store.allocation_credential(aid)
            if known is not None:
                self._credentials[aid] = known
        return known

    async def register_worker(self, params: p.RegisterWorker) -> dict:
        caller = current_caller.get()
        if not caller.admin and (params.workflow_id, params.allocation_id) != (caller.workflow_id,
                                                                              caller.allocation_id):
            raise Unauthorized(f"this credential is for allocation {caller.allocation_id} of workflow "
                               f"{caller.workflow_id}, not allocation {params.allocation_id} of workflow "
                               f"{params.workflow_id}")
        if not caller.admin and await self.store.allocation_state(caller.allocation_id) not in ("pending", "running"):
            raise Unauthorized(f"allocation {caller.allocation_id} has ended; its credential no longer registers "
                               "workers")
        wid = await self.store.register_worker(params.workflow_id, params.allocation_id, params.host, params.cpus)
        return {"worker_id": wid, "poll_interval": self.worker_poll_interval}

    async def _own_worker(self, worker_id: int):
        """The worker's row, if the caller may act for it: admin, or its own allocation's credential."""
        w = await self.store.worker(worker_id)
        caller = current_caller.get()
        if not caller.admin and w["allocation_id"] != caller.allocation_id:
            raise Unauthorized(f"worker {worker_id} does not belong to allocation {caller.allocation_id}")
        return w

    async def worker_poll(self, params: p.WorkerPoll) -> p.WorkerPollResult:
        w = await self._own_worker(params.worker_id)
        if w["state"] != "active":
            return p.WorkerPollResult(stop=True)
        mine = {(j, r, a) for j, r, a in await self.store.worker_running_jobs(params.worker_id)}
        if params.started:
            await self.store.set_pids([(s.pid, s.job_id, s.run_id, s.attempt_id) for s in params.started
                                       if (s.job_id, s.run_id, s.attempt_id) in mine])
        exits = [Exit(e.job_id, e.run_id, e.attempt_id, e.return_code, e.end_time, e.message, w["workflow_id"])
                 for e in params.exits if (e.job_id, e.run_id, e.attempt_id) in mine]
        await self.store.record_exits(exits)
        for r in params.recoveries:  # only those handed to this worker
            await self.store.finish_recovery(r, worker_id=params.worker_id)
        claiming = params.claim and params.free_cpus > 0
        if claiming:
            jobs = await self.store.claim_for_worker(params.worker_id, params.free_cpus)  # heartbeats too
        else:
            jobs = []
            await self.store.heartbeat(params.worker_id)
        return p.WorkerPollResult(jobs=jobs, recoveries=await self.store.worker_recoveries(params.worker_id),
                                  waiting=await self.store.worker_waiting(params.worker_id),
                                  api_url=self.tcp_url or self.api_url)

    async def finish_worker(self, params: p.WorkerFinish) -> dict:
        await self._own_worker(params.worker_id)
        running = await self.store.worker_running_jobs(params.worker_id)
        if running:
            await self.allocations.lose_worker(params.worker_id, f"finished with jobs running: {params.reason}")
        else:
            await self.store.finish_worker(params.worker_id, params.reason)
        return {"finished": params.worker_id}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


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


def ensure_token(path: str) -> str:
    """The admin bearer token for the TCP door; created 0600 on first use."""
    with os.fdopen(open_private_file(path, os.O_RDWR, "the token file"), "r+") as f:
        token = f.read().strip()
        if not token:
            token = secrets.token_urlsafe(32)
            f.write(token + "\n")
    return token
