"""Building the daemon's services in-process, on a real SQLite store and a real EventBus.

The one place that knows how each service is constructed: the tests/test_service_*.py files call
these factories, so that a change of a service's constructor (or of how the store is composed)
is adapted here only. What would be slow (Slurm's commands, the worker's HTTP transport) is
replaced by a small fake that keeps the real interface; processes are real and short.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import msgspec
import pytest

from torcd import events as E
from torcd import protocol as p
from torcd.bus import EventBus
from torcd.core.attempts import Exit, Start
from torcd.credentials import Caller
from torcd.protocol import Runnable
from torcd.services.actions import ActionRunner
from torcd.services.allocations import AllocationService
from torcd.services.autoscheduler import AutoScheduler
from torcd.services.dispatcher import Dispatcher
from torcd.services.executor import LocalExecutor
from torcd.services.exit_log import ExitLog
from torcd.services.monitor import Monitor
from torcd.services.recovery import RecoveryRunner
from torcd.services.retry_engine import RetryEngine
from torcd.services.workers import WorkerService
from torcd.spec.parse import parse_spec
from torcd.store.store import Store

API_URL = "unix:///nonexistent/torcd-inproc.sock"  # what jobs see as TORC_API_URL; nothing listens


# -- the store and the bus ---------------------------------------------------


class Rig:
    """A store wired to a bus as the daemon wires them (commit, then publish), and everything
    published, in order, for the tests to read.

    Tests reach the store through the part that does the thing (`queries`, `workflows`,
    `execution`, `workers`, `slurm`, `actions`), each given to a service as the daemon gives it."""

    def __init__(self, store: Store, bus: EventBus, tmp: Path):
        self.store, self.bus, self.tmp = store, bus, tmp
        self.events: list = []
        self.queries, self.workflows, self.execution = store.queries, store.workflows, store.execution
        self.workers, self.slurm, self.actions = store.workers, store.slurm, store.actions

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def of(self, kind: type[E.EventBase]) -> list:
        return [e for e in self.events if isinstance(e, kind)]


async def make_rig(tmp_path: Path) -> Rig:
    """A fresh store in tmp_path, opened the way daemon.py opens it, publishing on a real bus."""
    store = await Store.open(str(tmp_path / "torcd.db"))
    rig = Rig(store, EventBus(), tmp_path)

    def publish(events):
        events = list(events)
        rig.events.extend(events)
        rig.bus.publish(events)

    store.on_commit = publish
    return rig


@pytest.fixture(name="rig")
async def rig_fixture(tmp_path):
    """A test's Rig (import `rig_fixture` to have it)."""
    r = await make_rig(tmp_path)
    yield r
    await r.store.close()


async def submit(rig: Rig, spec: str, executor: str = "local") -> int:
    """Create a workflow from spec text, its directory tmp_path; return its id."""
    return await rig.workflows.create_workflow(parse_spec(spec, "spec.yaml"), str(rig.tmp), "spec.yaml", executor)


async def start_ready(rig: Rig) -> dict[str, Runnable]:
    """Claim and start every ready job (as the dispatcher would, no process); the attempts, by name."""
    claimed, _ = await rig.execution.dispatch([], [], 100, "host")
    await rig.execution.dispatch([], [Start(job, 4242, time.time()) for job in claimed], 0, "host")
    return {job.name: job for job in claimed}


async def record_exit(rig: Rig, job: Runnable, rc: int, cause: str | None = None) -> None:
    await rig.execution.record_exits([Exit(job.job_id, job.run_id, job.attempt_id, rc, time.time(), cause=cause)])


async def statuses(rig: Rig, wf: int) -> dict[str, str]:
    return {j.name: j.status for j in await rig.queries.jobs(wf)}


async def job_ids(rig: Rig, wf: int) -> dict[str, int]:
    return {j.name: j.id for j in await rig.queries.jobs(wf)}


async def eventually(predicate, timeout: float = 5.0, what: str = "the condition") -> None:
    """Poll an async (or plain) predicate until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(*services):
    """Run services' `run()` loops as tasks for the duration of a block, then cancel them."""
    tasks = [asyncio.create_task(s.run()) for s in services]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:  # a service that crashed fails the test
            if isinstance(r, Exception):
                raise r


# -- the services ------------------------------------------------------------


def make_dispatcher(
    rig: Rig, max_cpus: int = 4, gpus: list[str] | None = None, max_memory: int = 1 << 62
) -> Dispatcher:
    return Dispatcher(rig.execution, rig.bus, API_URL, max_cpus, ExitLog(str(rig.tmp / "exits.log")), gpus, max_memory)


def make_executor(on_exit, exit_log: ExitLog | None = None, gpus: list[str] | None = None) -> LocalExecutor:
    return LocalExecutor(API_URL, on_exit, exit_log, gpus)


_job_ids = iter(range(1, 1_000_000))


def make_runnable(tmp_path: Path, command: str, **fields) -> Runnable:
    """A claimed job, as the store hands it to an executor (ids unique within the test session)."""
    jid = next(_job_ids)
    out = str(tmp_path / "output")
    return Runnable(
        jid,
        1,
        f"j{jid}",
        command,
        1,
        1,
        fields.pop("num_cpus", 1),
        fields.pop("env", {}),
        fields.pop("cwd", str(tmp_path)),
        out,
        f"{out}/j{jid}.o",
        f"{out}/j{jid}.e",
        **fields,
    )


def make_monitor(on_over, sample) -> Monitor:
    return Monitor(on_over, sample)


def make_retry_engine(rig: Rig) -> RetryEngine:
    return RetryEngine(rig.execution, rig.bus)


def make_recovery_runner(rig: Rig) -> RecoveryRunner:
    return RecoveryRunner(rig.execution, rig.bus, API_URL)


class FakeSlurm:
    """sbatch, squeue, sinfo and scancel as AllocationService calls them, answering from a dict."""

    def __init__(self, node_shape=None):
        self.submitted: list[tuple[str, str]] = []  # (script text, cwd)
        self.states: dict[str, str] = {}  # Slurm job id -> state; absent: left the queue
        self.node_shape = node_shape
        self.sinfo_calls = 0

    async def sbatch(self, script: str, cwd: str) -> str:
        self.submitted.append((script, cwd))
        slurm_id = str(1000 + len(self.submitted))
        self.states[slurm_id] = "PENDING"
        return slurm_id

    async def squeue(self, job_ids: list[str]) -> dict[str, str]:
        return {j: self.states[j] for j in job_ids if j in self.states}

    async def sinfo(self, partition: str | None):
        self.sinfo_calls += 1
        return self.node_shape

    async def scancel(self, job_ids: list[str]) -> None:  # --state=PENDING
        for j in job_ids:
            if self.states.get(j) == "PENDING":
                self.states[j] = "CANCELLED"


def make_allocations(
    rig: Rig,
    slurm: FakeSlurm | None = None,
    url: str | None = "http://127.0.0.1:1",
    poll_interval: float = 5.0,
    heartbeat_timeout: float = 60.0,
) -> AllocationService:
    slurm = slurm or FakeSlurm()
    return AllocationService(
        rig.queries,
        rig.slurm,
        rig.workers,
        rig.execution,
        url=url,
        credentials_dir=str(rig.tmp / "credentials"),
        slurm_output_dir=str(rig.tmp / "state-slurm"),
        poll_interval=poll_interval,
        heartbeat_timeout=heartbeat_timeout,
        sbatch=slurm.sbatch,
        squeue=slurm.squeue,
        sinfo=slurm.sinfo,
        scancel=slurm.scancel,
    )


def make_workers(rig: Rig, allocations: AllocationService | None = None, poll_interval: float = 0.05) -> WorkerService:
    return WorkerService(rig.workers, rig.slurm, allocations or make_allocations(rig), poll_interval)


async def make_actions(rig: Rig, allocations: AllocationService | None = None) -> ActionRunner:
    runner = ActionRunner(rig.actions, rig.queries, rig.bus, allocations or make_allocations(rig), API_URL)
    await rig.actions.load_action_workflows()
    return runner


def make_autoscheduler(rig: Rig, allocations: AllocationService, clock) -> AutoScheduler:
    return AutoScheduler(rig.slurm, rig.bus, allocations, interval=3600.0, clock=clock)


# -- the allocation worker ----------------------------------------------------


class InProcessRpc:
    """The worker's RPC transport, answered by a WorkerService in this process (as the daemon's
    handlers answer `workers.*`), the messages round-tripped through JSON as on the wire."""

    def __init__(self, rig: Rig, workers: WorkerService, caller: Caller = Caller(), api_url: str = API_URL):  # noqa: B008 a frozen struct: safe to share
        self.rig, self.workers, self.caller, self.api_url = rig, workers, caller, api_url
        self.patience = 0.0
        self.calls: list[tuple[str, object]] = []
        self.interrupted = asyncio.Event()

    def interrupt(self) -> None:
        self.interrupted.set()

    async def call(self, method: str, params, result_type=None):
        params = msgspec.json.decode(msgspec.json.encode(params))
        self.calls.append((method, params))
        if method == "workers.register":
            req = msgspec.convert(params, p.RegisterWorker)
            wid = await self.workers.register(req, self.caller)
            result = {
                "worker_id": wid,
                "poll_interval": self.workers.poll_interval,
                "compute_node": await self.rig.workers.compute_node(req.workflow_id),
            }
        elif method == "workers.poll":
            result = await self.workers.poll(msgspec.convert(params, p.WorkerPoll), self.caller, self.api_url)
        elif method == "workers.finish":
            result = await self.workers.finish(msgspec.convert(params, p.WorkerFinish), self.caller)
        else:
            raise AssertionError(f"the worker called {method}")
        result = msgspec.json.decode(msgspec.json.encode(result))
        return msgspec.convert(result, result_type) if result_type else result

    async def close(self) -> None:
        pass


async def worker_with_jobs(
    rig: Rig, workers: WorkerService, wf: int, allocation_id: int | None = None, cpus: int = 1
) -> tuple[int, list[Runnable]]:
    """A worker registered (as the admin) that has taken up to `cpus` ready jobs in its first poll."""
    wid = await workers.register(
        p.RegisterWorker(workflow_id=wf, host="node1", cpus=4, allocation_id=allocation_id), Caller()
    )
    return wid, (await workers.poll(p.WorkerPoll(worker_id=wid, free_cpus=cpus), Caller(), API_URL)).jobs


def make_worker(
    rpc,
    wf: int,
    allocation_id: int | None = None,
    cpus: int = 2,
    idle_timeout: float = 0.0,
    walltime: float | None = None,
    memory: int | None = None,
    journal=None,
):
    from torcctl.worker.run import Worker

    return Worker(
        rpc,
        workflow_id=wf,
        allocation_id=allocation_id,
        cpus=cpus,
        walltime=walltime,
        poll_interval=0.02,
        idle_timeout=idle_timeout,
        memory=memory,
        patience=0.0,
        journal=journal,
    )
