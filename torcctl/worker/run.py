"""`torcctl worker`: the job runner inside a Slurm allocation.

Registers with the daemon, then loops on one RPC (`workers.poll`) that
reports what happened (starts, exits, recovery results) and brings back jobs
that fit its free CPUs, memory, GPUs and remaining walltime, and recovery
scripts to run. Exits when nothing can come to it any more, after waiting a
while (the workflow's `compute_node_wait_for_new_jobs_seconds`) for jobs
still blocked behind running ones, when its walltime is nearly spent, or on
SIGTERM (after stopping its jobs and reporting them). A daemon that does not
answer (restarting, or its login node rebooting) is retried for the
workflow's `compute_node_wait_for_healthy_database_minutes`; jobs keep
running meanwhile and their exits are reported when it is back. A signal cuts
that wait short: the worker stops its jobs, keeps their exits in its journal
and leaves. A daemon whose certificate fails verification is not "away": the
worker says so and leaves at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import time
from collections.abc import Mapping

import aiohttp
import msgspec
import structlog

from torcctl.transport import ConnectError
from torcctl.transport import read_token as client_read_token
from torcctl.worker.journal import Journal, JournalError, Saved
from torcd import protocol as p
from torcd.core.exits import SIGKILL_EXIT, SIGTERM_EXIT, Exit
from torcd.core.resources import ComputeNode, gpu_ids
from torcd.services.executor import LocalExecutor
from torcd.services.processes import prepare_to_start_processes
from torcd.services.recovery_script import run_recovery_script

log = structlog.get_logger("torcctl.worker.run")
DEFAULT_PATIENCE = 1200.0  # seconds, until the workflow says otherwise (Torc's 20 minutes)
# Once signalled, seconds a call may still spend on a daemon that does not answer: Slurm kills
# the worker KillWait (30 s by default) after its SIGTERM.
SIGNAL_GRACE = 5.0


class WorkerError(Exception):
    pass


class Interrupted(WorkerError):
    """A signal came while the daemon did not answer."""


class RpcSession:
    def __init__(self, url: str, token: str | None, ca_file: str | None = None):
        self.ca_file = ca_file
        if url.startswith("unix://"):
            self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=url[len("unix://") :]))
            self.endpoint = "http://localhost/rpc"
        else:
            tls = None
            if ca_file:  # trust the daemon's own certificate (or the CA that signed it), nothing else
                try:
                    tls = ssl.create_default_context(cafile=ca_file)
                except (OSError, ssl.SSLError) as e:
                    raise WorkerError(f"cannot read the CA file {ca_file}: {e}") from None
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls if tls else True))
            self.endpoint = url.rstrip("/") + "/rpc"
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._id = 0
        self.patience = DEFAULT_PATIENCE  # seconds to keep trying a daemon that does not answer
        self.interrupted = asyncio.Event()
        self._interrupted_at: float | None = None

    def interrupt(self) -> None:
        """A signal: stop waiting for a daemon that does not answer (after SIGNAL_GRACE at most)."""
        if self._interrupted_at is None:
            self._interrupted_at = time.monotonic()
            self.interrupted.set()

    def _deadline(self, since: float) -> float:
        if self._interrupted_at is None:
            return since + self.patience
        return min(since + self.patience, max(since, self._interrupted_at) + SIGNAL_GRACE)

    async def call(self, method: str, params: msgspec.Struct | dict, result_type=None):
        self._id += 1
        body = msgspec.json.encode({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        since, attempt = time.monotonic(), 0
        while True:
            try:
                data = await self._attempt(body, since)
                break
            except aiohttp.ClientSSLError as e:  # a wrong CA file or door: waiting would not change it
                raise WorkerError(self._tls_refused(e)) from None
            except (TimeoutError, aiohttp.ClientConnectionError) as e:
                now = time.monotonic()
                if now >= self._deadline(since):
                    if self._interrupted_at is not None:
                        raise Interrupted(
                            f"stopped by a signal while the daemon at {self.endpoint} did not answer"
                        ) from None
                    raise WorkerError(
                        f"cannot reach the daemon at {self.endpoint} for {now - since:.0f}s: {e}"
                    ) from None
                attempt += 1
                log.warning("rpc_retry", method=method, attempt=attempt, waited=round(now - since), error=repr(e))
                await self._pause(min(2.0 ** min(attempt, 7) / 4, 30.0, self._deadline(since) - now))
        reply = msgspec.json.decode(data)
        if "error" in reply:
            raise WorkerError(reply["error"].get("message", "unknown error"))
        return msgspec.convert(reply["result"], result_type) if result_type else reply["result"]

    async def _pause(self, seconds: float) -> None:
        """Wait before trying again: cut short by a signal, and short once signalled."""
        if self._interrupted_at is not None:
            await asyncio.sleep(min(seconds, 0.5))
            return
        try:
            await asyncio.wait_for(self.interrupted.wait(), seconds)
        except TimeoutError:
            pass

    async def _attempt(self, body: bytes, since: float) -> bytes:
        """One request; a signal that comes meanwhile leaves it until the call's deadline."""
        post = asyncio.ensure_future(self._post(body))
        signalled = asyncio.ensure_future(self.interrupted.wait())
        try:
            await asyncio.wait({post, signalled}, return_when=asyncio.FIRST_COMPLETED)
            if post.done():
                return post.result()
            return await asyncio.wait_for(post, max(0.0, self._deadline(since) - time.monotonic()))
        finally:
            post.cancel()
            signalled.cancel()

    async def _post(self, body: bytes) -> bytes:
        async with self.session.post(
            self.endpoint, data=body, headers=self.headers, timeout=aiohttp.ClientTimeout(total=60)
        ) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise WorkerError(f"HTTP {resp.status}: {data.decode(errors='replace')}")
            return data

    def _tls_refused(self, e: aiohttp.ClientSSLError) -> str:
        if isinstance(e, aiohttp.ClientConnectorCertificateError):
            why = getattr(e.certificate_error, "verify_message", None) or str(e.certificate_error)
            trusted = f"with the CA file {self.ca_file}" if self.ca_file else "with the system's CAs (no --ca-file)"
            return (
                f"the certificate of the daemon at {self.endpoint} cannot be verified {trusted}: {why}; "
                "--ca-file must be the daemon's certificate or the CA that signed it"
            )
        return f"cannot speak TLS with the daemon at {self.endpoint}: {e.os_error}"

    async def close(self) -> None:
        await self.session.close()


class Worker:
    def __init__(
        self,
        rpc: RpcSession,
        *,
        workflow_id: int,
        allocation_id: int | None,
        cpus: int,
        walltime: float | None,
        poll_interval: float,
        idle_timeout: float | None,
        memory: int | None = None,
        gpus: list[str] | None = None,
        patience: float | None = None,
        journal: Journal | None = None,
    ):
        self.rpc = rpc
        self.workflow_id, self.allocation_id, self.cpus = workflow_id, allocation_id, cpus
        self.memory, self.gpus = memory, gpus or []
        self.walltime, self.started_at = walltime, time.monotonic()
        self.deadline: float | None = None
        self.settings = ComputeNode()
        self.poll_interval, self.idle_timeout, self.patience = poll_interval, idle_timeout, patience
        self.journal = journal
        self.worker_id: int | None = None
        self._stopping_jobs: asyncio.Future | None = None
        self._sending: p.WorkerPoll | None = None  # the poll in flight, until the daemon has it
        self._abandon = False  # its first poll after taking over a journal gives up what it cannot watch
        self._sending_since = 0.0
        self.exits: list[Exit] = []
        self.started: list[p.StartedReport] = []
        self.recovery_results: list[p.RecoveryReport] = []
        self.recoveries: dict[int, asyncio.Task] = {}
        self._accepted: set[tuple[int, int, int, bool]] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        self._signalled = False
        self._at_time_limit = False
        self.executor: LocalExecutor | None = None

    def _on_exit(self, e: Exit) -> None:
        # Stopped by Slurm's time limit: after the signal reached the worker, or (Slurm signals the
        # job's processes too, and they may die first) killed by TERM or KILL in the last stretch.
        late = (
            self.deadline is not None
            and time.monotonic() >= self.deadline
            and e.return_code in (SIGKILL_EXIT, SIGTERM_EXIT)
        )
        if e.cause is None and e.return_code != 0 and (self._at_time_limit or late):
            e = msgspec.structs.replace(e, cause="timeout", message="stopped at the allocation's time limit")
        self.exits.append(e)
        if self._sending is not None and time.monotonic() - self._sending_since > 1.0:
            self._save()  # the daemon is not answering: keep this exit on disk meanwhile
        self.wake.set()

    @property
    def registered_id(self) -> int:
        """Its worker id; everything that reports to the daemon runs after it registered."""
        assert self.worker_id is not None, "the worker has not registered yet"
        return self.worker_id

    def _save(self) -> None:
        if self.journal is None:
            return
        sending = self._sending or p.WorkerPoll(worker_id=self.registered_id)
        try:
            self.journal.save(
                Saved(
                    self.registered_id,
                    [*sending.exits, *self.exits],
                    [*sending.started, *self.started],
                    [*sending.recoveries, *self.recovery_results],
                )
            )
        except OSError as e:  # a full disk must not stop the jobs; only a restart would lose these
            log.warning("journal_not_written", path=self.journal.path, error=str(e))

    async def run(self) -> str:
        try:
            return await self._serve()
        except Interrupted as e:
            raise WorkerError(f"{e}; {await self._keep_unreported()}") from None

    async def _keep_unreported(self) -> str:
        """After a signal, with the daemon away: let the jobs it is stopping end, and keep what
        the daemon has not heard in the journal, for a worker that takes over (or for nobody)."""
        if self.worker_id is None:
            return "it had not registered"
        if self._stopping_jobs is not None:
            await asyncio.gather(self._stopping_jobs, *self.recoveries.values(), return_exceptions=True)
        until = time.monotonic() + SIGNAL_GRACE  # their exits come from the tasks that reap them
        # A poll, not an event: the tasks that reap the processes empty `procs`, which signals nothing.
        while self.executor is not None and self.executor.procs and time.monotonic() < until:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        sending = self._sending or p.WorkerPoll(worker_id=self.worker_id)
        count = (
            len(sending.exits)
            + len(sending.started)
            + len(sending.recoveries)
            + len(self.exits)
            + len(self.started)
            + len(self.recovery_results)
        )
        if self.journal is None:
            return f"{count} reports not sent (no journal)"
        self._save()
        return f"{count} reports not sent, kept in its journal {self.journal.path}"

    async def _serve(self) -> str:
        idle_timeout = await self._register()
        idle_since: float | None = None
        reason = "nothing left to run"
        while True:
            result = await self._poll()
            if result.stop:
                reason = "the daemon asked it to stop"
                break
            self.executor = self.executor or LocalExecutor(result.api_url, self._on_exit, gpus=self.gpus)
            self._start_claimed(self.executor, result)
            busy = self.executor.procs or self.recoveries or result.jobs or result.waiting
            if self.stopping and not self.executor.procs and not self.recoveries:
                reason = "stopped by a signal" if self._signalled else "walltime nearly spent"
                await self._poll(claim=False)  # report the last exits
                break
            if busy or self.exits or self.started or self.recovery_results:
                idle_since = None
            else:
                idle_since = idle_since or time.monotonic()
                if not result.may_come and not self.settings.ignore_workflow_completion:
                    break  # nothing can become ready for it any more
                if time.monotonic() - idle_since >= idle_timeout:
                    reason = f"no new jobs for {idle_timeout:g}s"
                    break
            if self.deadline is not None and time.monotonic() >= self.deadline and not self.stopping:
                log.info("walltime_nearly_spent", worker_id=self.worker_id)
                self.stopping = True
            try:
                await asyncio.wait_for(self.wake.wait(), self.poll_interval)
            except TimeoutError:
                pass
            self.wake.clear()
        await self.rpc.call("workers.finish", p.WorkerFinish(worker_id=self.registered_id, reason=reason))
        if self.journal:
            self.journal.remove()
        log.info("worker_finished", worker_id=self.worker_id, reason=reason)
        return reason

    async def _register(self) -> float:
        """Register with the daemon (resuming the journal's worker if it left one) and take its
        settings; return how long to wait idle for new jobs."""
        try:
            left = self.journal.load() if self.journal else None
        except JournalError as e:
            raise WorkerError(str(e)) from None
        reg = await self.rpc.call(
            "workers.register",
            p.RegisterWorker(
                workflow_id=self.workflow_id,
                host=node_name(),
                cpus=self.cpus,
                allocation_id=self.allocation_id,
                memory=self.memory,
                gpus=len(self.gpus),
                resume=left.worker_id if left else None,
            ),
        )
        self.worker_id = reg["worker_id"]
        if left and left.worker_id == self.worker_id:  # what the worker before it had not reported
            log.info("journal_resumed", worker_id=self.worker_id, exits=len(left.exits))
            self.exits += left.exits
            self.started += left.started
            self.recovery_results += left.recoveries
            self._abandon = True
        self.poll_interval = min(self.poll_interval, reg.get("poll_interval", self.poll_interval))
        self.settings = msgspec.convert(reg.get("compute_node") or {}, ComputeNode)
        self.rpc.patience = self.patience if self.patience is not None else self.settings.wait_for_daemon
        if self.walltime:
            self.deadline = self.started_at + self.walltime - self.settings.buffer(self.walltime)
        log.info(
            "worker_registered",
            worker_id=self.worker_id,
            workflow_id=self.workflow_id,
            cpus=self.cpus,
            memory=self.memory,
            gpus=self.gpus,
            journal=self.journal.path if self.journal else None,
        )
        return self.idle_timeout if self.idle_timeout is not None else self.settings.wait_for_new_jobs

    def _start_claimed(self, executor: LocalExecutor, result: p.WorkerPollResult) -> None:
        """Start the jobs and recovery scripts the daemon handed this worker."""
        for job in result.jobs:
            if not self._accept(job.job_id, job.run_id, job.attempt_id):
                continue
            pid = executor.start(job)
            if pid is not None:
                self.started.append(p.StartedReport(job.job_id, job.run_id, job.attempt_id, pid))
        if result.jobs:
            self._save()  # a worker that dies now must not have these handed out again
        for rec in result.recoveries:
            if not self._accept(rec.job_id, rec.run_id, rec.attempt_id, recovery=True):
                continue
            log.info("recovery_started", job_id=rec.job_id, attempt_id=rec.attempt_id)
            self.recoveries[rec.job_id] = asyncio.create_task(self._recover(rec, result.api_url))

    def _accept(self, job_id: int, run_id: int, attempt_id: int, recovery: bool = False) -> bool:
        """False for what the daemon handed out again (its earlier reply may have been lost)."""
        key = (job_id, run_id, attempt_id, recovery)
        if key in self._accepted:
            return False
        self._accepted.add(key)
        return True

    def on_signal(self) -> None:
        """SIGTERM (scancel, walltime): stop claiming, stop jobs; their exits get reported, with
        cause `timeout` when the signal came at the end of the walltime."""
        self._signalled = True
        self._at_time_limit = self.deadline is not None and time.monotonic() >= self.deadline
        self.stopping = True
        self.rpc.interrupt()
        if self.executor is not None:
            self._stopping_jobs = asyncio.ensure_future(self.executor.kill(list(self.executor.procs), grace=3.0))
        for task in self.recoveries.values():
            task.cancel()
        self.wake.set()

    def time_left(self) -> float | None:
        """Seconds of walltime a job claimed now may use (to the deadline); None without a walltime."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    async def _poll(self, claim: bool = True) -> p.WorkerPollResult:
        ex = self.executor
        used = ex.cpus_in_use if ex else 0
        exits, self.exits = self.exits, []
        started, self.started = self.started, []
        recs, self.recovery_results = self.recovery_results, []
        left = self.time_left()
        if left is not None and left < max(self.settings.min_time_for_new_jobs, 1.0):
            claim = False
        params = p.WorkerPoll(
            worker_id=self.registered_id,
            free_cpus=max(0, self.cpus - used),
            claim=claim and not self.stopping,
            free_memory=None if self.memory is None else max(0, self.memory - (ex.memory_in_use if ex else 0)),
            free_gpus=len(ex.gpus_free) if ex and ex.gpus_free is not None else len(self.gpus),
            time_left=left,
            started=started,
            recoveries=recs,
            exits=list(exits),
            abandon=self._abandon,
        )
        self._abandon = False
        self._sending, self._sending_since = params, time.monotonic()
        if params.exits or params.started or params.recoveries:
            self._save()
        result = await self.rpc.call("workers.poll", params, p.WorkerPollResult)
        self._sending = None
        if params.exits or params.started or params.recoveries:
            self._save()  # what arrived meanwhile, if anything
        return result

    async def _recover(self, rec: p.Recovery, api_url: str) -> None:
        try:
            report = await run_recovery_script(rec, api_url)
            log.info("recovery_finished", job_id=rec.job_id, attempt_id=rec.attempt_id, ok=report.ok)
            self.recovery_results.append(report)
        except Exception as e:  # a job left `recovering` forever is worse than a failed recovery
            log.exception("recovery_crashed", job_id=rec.job_id, attempt_id=rec.attempt_id)
            self.recovery_results.append(
                p.RecoveryReport(
                    rec.job_id, rec.run_id, rec.attempt_id, False, None, f"recovery could not run on the worker: {e!r}"
                )
            )
        finally:
            self.recoveries.pop(rec.job_id, None)
            self.wake.set()


def node_name() -> str:
    """This node's name: Slurm's (nodes sharing a host name differ by it), else the host's."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def read_token(token_file: str | None) -> str | None:
    try:
        return client_read_token(token_file)
    except ConnectError as e:
        raise WorkerError(str(e)) from None


async def run_worker(args) -> int:
    prepare_to_start_processes()
    rpc = RpcSession(args.url, read_token(args.token_file), args.ca_file)
    # What its jobs need to reach the daemon with this allocation's credential (torcctl user-data).
    for name, path in (("TORC_API_TOKEN_FILE", args.token_file), ("TORC_CA_FILE", args.ca_file)):
        if path:
            os.environ[name] = os.path.abspath(path)  # noqa: ASYNC240 at start-up, before any job runs
    cpus = args.cpus or int(
        os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or os.cpu_count() or 1
    )
    try:
        gpus = gpu_ids(dict(os.environ), None, args.gpus)
    except ValueError as e:
        raise WorkerError(str(e)) from None
    try:
        if args.journal:
            journal = Journal(args.journal)
        elif args.allocation_id is not None:
            journal = Journal.for_allocation(args.workflow_id, args.allocation_id, node_name(), rpc.token)
        else:
            journal = None
    except JournalError as e:
        raise WorkerError(str(e)) from None
    worker = Worker(
        rpc,
        workflow_id=args.workflow_id,
        allocation_id=args.allocation_id,
        cpus=cpus,
        walltime=args.walltime,
        poll_interval=args.poll_interval,
        idle_timeout=args.idle_timeout,
        memory=args.memory if args.memory is not None else slurm_memory(os.environ, cpus),
        gpus=gpus,
        patience=args.wait_for_daemon,
        journal=journal,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.on_signal)
    try:
        await worker.run()
    finally:
        await rpc.close()
    return 0


def slurm_memory(environ: Mapping[str, str], cpus: int) -> int | None:
    """Bytes of memory Slurm gave this allocation on this node, if it says (megabytes in
    SLURM_MEM_PER_NODE, or per CPU in SLURM_MEM_PER_CPU)."""
    try:
        if environ.get("SLURM_MEM_PER_NODE"):
            return int(environ["SLURM_MEM_PER_NODE"]) << 20
        if environ.get("SLURM_MEM_PER_CPU"):
            return int(environ["SLURM_MEM_PER_CPU"]) * cpus << 20
    except ValueError:
        return None
    return None
