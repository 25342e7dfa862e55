"""Allocations: submitting them to Slurm, following them in the queue, noticing lost workers.

A worker that stops heartbeating, or whose allocation has left the queue,
is lost: each job it was running is recorded as exited with WORKER_LOST_RC
and goes through its failure handler like any exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import structlog

from torcd import events as E
from torcd.bus import EventBus
from torcd.core import allocations as A
from torcd.core import slurm_plan
from torcd.core.exits import SIGKILL_EXIT, Cause, Exit
from torcd.core.resources import MAX_RUNTIME
from torcd.core.slurm_plan import JobNeed, NodeShape, SchedulerPlan
from torcd.credentials import new_credential
from torcd.errors import InvalidParams
from torcd.ownership import UnsafePath, make_private_dir, open_private_file
from torcd.slurm import (
    SlurmError,
    partition_node_shape,
    private_dir,
    render_script,
    sbatch,
    scancel_pending,
    squeue,
    walltime_seconds,
    write_script,
)
from torcd.spec.parse import SlurmSchedulerSpec
from torcd.store.execution import ExecutionStore
from torcd.store.queries import Queries
from torcd.store.slurm import SlurmStore
from torcd.store.workers import WorkerStore

log = structlog.get_logger("torcd.allocations")
WORKER_LOST_RC = SIGKILL_EXIT  # as if SIGKILLed: the allocation or node went away under the job


class AllocationService:
    def __init__(
        self,
        queries: Queries,
        slurm: SlurmStore,
        workers: WorkerStore,
        execution: ExecutionStore,
        *,
        url: str | None,
        credentials_dir: str,
        slurm_output_dir: str,
        ca_file: str | None = None,
        poll_interval: float = 5.0,
        heartbeat_timeout: float = 60.0,
        sbatch=sbatch,
        squeue=squeue,
        sinfo=partition_node_shape,
        scancel=scancel_pending,
    ):
        self.queries, self.slurm, self.workers, self.execution = queries, slurm, workers, execution
        # Slurm's commands (tests pass fakes)
        self._sbatch, self._squeue, self._sinfo, self._scancel = sbatch, squeue, sinfo, scancel
        self.url = url
        self._wake = asyncio.Event()  # a workflow ended: check now
        self.credentials_dir = credentials_dir
        # Slurm opens an allocation's --output by path when it starts, hours after any check: only a
        # directory of the daemon's own (in the state dir) is safe from a group member's swap.
        self.slurm_output_dir = slurm_output_dir
        self.ca_file = ca_file  # the TCP door's certificate, which workers trust
        self.poll_interval = poll_interval
        self.heartbeat_timeout = heartbeat_timeout
        self._submit_lock = asyncio.Lock()
        self.started = time.time()  # workers silent since before this get their workflow's window to return
        self._shapes: dict[str | None, NodeShape | None] = {}  # partition -> its nodes, as sinfo said

    async def submit(
        self, wf: int, reason: str, *, count: int | None = None, scheduler: str | None = None, auto: bool = False
    ) -> list[int]:
        """Submit allocations sized for the workflow's ready jobs; return their ids."""
        if self.url is None:
            raise InvalidParams("Slurm workers need a TCP door: start torcd with --listen HOST:PORT")
        async with self._submit_lock:
            info = await self.queries.workflow(wf)
            schedulers = await self.slurm.schedulers(wf)
            account = await self.slurm.workflow_account(wf)
            if scheduler is not None and scheduler not in schedulers:
                known = ", ".join(sorted(schedulers)) or "none"
                raise InvalidParams(
                    f"workflow {wf} has no scheduler named {scheduler!r} ({known})", {"field": "$.scheduler"}
                )
            names = [scheduler] if scheduler else list(schedulers)
            submitted = []
            for name in names:
                spec = schedulers[name]
                ready = await self.slurm.ready_job_needs(wf, name)
                current = await self.slurm.open_allocation_count(wf, name)
                p = await self.plan(spec, ready, current)
                n = p.allocations if count is None else count
                for _ in range(n):
                    submitted.append(
                        await self._submit_one(wf, info.output_dir, info.cwd, name, spec, p.node, account, reason, auto)
                    )
            return submitted

    async def plan(self, spec: SlurmSchedulerSpec, ready: list[JobNeed], current: int = 0) -> SchedulerPlan:
        """How many allocations of this scheduler the ready jobs need (`core.slurm_plan`)."""
        shape = await self.node_shape(spec, ready)
        return slurm_plan.plan(spec.name, ready, shape, _walltime(spec), spec.nodes, spec.max_allocations, current)

    async def node_shape(self, spec: SlurmSchedulerSpec, jobs: list[JobNeed]) -> NodeShape:
        """The shape to pack into: the spec's, else the partition's as sinfo reports it, else (no
        Slurm answer) one as wide as the widest job."""
        widest = max((j.cpus for j in jobs), default=1)
        seen = None
        if not spec.is_shared and spec.node_cpus is None:
            seen = self._shapes.get(spec.partition)
            if seen is None:  # asked again until Slurm answers
                seen = self._shapes[spec.partition] = await self._sinfo(spec.partition)
        return spec.node_shape(seen, widest) or NodeShape(widest, None, max((j.gpus for j in jobs), default=0))

    async def misfits(self, schedulers: list[SlurmSchedulerSpec], jobs: list[tuple[str | None, JobNeed]]) -> list[str]:
        """For each job that fits no node of its scheduler: why, in a sentence."""
        out = []
        for spec in schedulers:
            mine = [j for s, j in jobs if s == spec.name]
            if not mine:
                continue
            shape = await self.node_shape(spec, mine)
            walltime = _walltime(spec)
            out += [
                f"job {j.name!r} fits no node of scheduler {spec.name!r}: {why}"
                for j in mine
                if (why := slurm_plan.misfit(j, shape, walltime))
            ]
        return out

    async def _submit_one(self, wf, output_dir, cwd, name, spec, node: NodeShape, account, reason, auto) -> int:
        assert self.url is not None  # submit refuses without a TCP door
        cpus = node.cpus
        aid = await self.slurm.add_allocation(wf, name, cpus, reason, auto)
        log_dir = os.path.join(output_dir, "slurm")
        script_path = os.path.join(log_dir, f"alloc_wf{wf}_a{aid}.sh")
        try:
            token_file = await self._write_credential(aid)
            await asyncio.to_thread(private_dir, self.slurm_output_dir, "the Slurm output directory")
            text = render_script(
                workflow_id=wf,
                allocation_id=aid,
                scheduler=spec,
                cpus=cpus,
                account=account,
                url=self.url,
                token_file=token_file,
                log_dir=self.slurm_output_dir,
                ca_file=self.ca_file,
                gpus=node.gpus,
            )
            await asyncio.to_thread(write_script, script_path, text)
            slurm_id = await self._sbatch(text, cwd)  # the copy in the output dir is for the user to read
            await asyncio.to_thread(_link_output, self.slurm_output_dir, log_dir, slurm_id)
        except (OSError, SlurmError) as e:
            await self.slurm.allocation_submitted(aid, None, script_path, str(e))
            log.warning("allocation_failed", workflow_id=wf, allocation_id=aid, error=str(e))
            return aid
        await self.slurm.allocation_submitted(aid, slurm_id, script_path, None)
        log.info(
            "allocation_submitted", workflow_id=wf, allocation_id=aid, slurm_job_id=slurm_id, cpus=cpus, reason=reason
        )
        return aid

    async def _write_credential(self, aid: int) -> str:
        """The allocation's own credential, in a file only the user can read; the store keeps its hash."""
        token, credential_hash = new_credential(aid)
        path = os.path.join(self.credentials_dir, f"alloc_{aid}.token")
        try:
            make_private_dir(self.credentials_dir, "the credentials directory")
            fd = open_private_file(path, os.O_WRONLY | os.O_TRUNC, "the allocation's credential")
        except UnsafePath as e:
            raise OSError(e.message) from None
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        await self.slurm.set_allocation_credential(aid, credential_hash)
        return path

    def listen(self, bus: EventBus) -> None:
        """Check at once when a workflow ends (or is canceled), not at the next poll: its
        allocations still queued are cancelled before Slurm starts the next one of a chain."""
        bus.listen("allocations", (E.WorkflowDone, E.WorkflowCanceled), lambda _: self._wake.set())

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except SlurmError as e:
                log.warning("slurm_poll_failed", error=str(e))
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def check(self, now: float | None = None) -> None:
        """Follow allocations in the queue; declare lost the workers that went silent. What each
        observation means is `core.allocations`' to say; this gathers them and applies the answers."""
        now = time.time() if now is None else now
        await self.cancel_queued_without_work()
        open_allocs = await self.slurm.open_allocations()
        with_ids = [a for a in open_allocs if a[2]]
        if with_ids:
            states = await self._squeue([a[2] for a in with_ids])
            # Only those whose status changes are written (the store decides again on the row).
            await self.slurm.update_allocations(
                [
                    (aid, states.get(slurm_id))
                    for aid, wf, slurm_id, state in with_ids
                    if A.handle(
                        A.QueueSeen(now, states.get(slurm_id)),
                        A.Allocation(aid, wf, A.AllocationStatus(state), slurm_id),
                    ).status
                    is not None
                ]
            )
        for wid, aid, beat, settings in await self.workers.active_workers():
            alloc_state = await self.slurm.allocation_state(aid) if aid is not None else None
            status = None if alloc_state is None else A.AllocationStatus(alloc_state)
            verdict = (
                await self.slurm.allocation_verdict(aid)
                if aid is not None and status == A.AllocationStatus.DONE
                else None
            )
            d = A.handle(
                A.SilenceChecked(
                    now,
                    self.heartbeat_timeout,
                    self.poll_interval,
                    self.started,
                    settings.wait_for_daemon,
                    status,
                    verdict,
                ),
                A.Worker(wid, 0, A.WorkerStatus.ACTIVE, aid, beat),
            )  # its workflow: not needed here
            if d.status == A.WorkerStatus.LOST:
                assert d.reason is not None  # a lost worker's decision says why
                await self.lose_worker(wid, d.reason, d.cause)

    async def cancel_queued_without_work(self, wf: int | None = None) -> None:
        """Cancel allocations still queued for workflows that are done (all, or `wf`'s; Torc does
        so for chained allocations), so that none starts only to find nothing; the queue check
        that follows sees them leave."""
        queued = await self.slurm.queued_without_work(wf)
        if not queued:
            return
        try:
            await self._scancel([slurm_id for _, _, slurm_id in queued])
        except SlurmError as e:
            log.warning("allocations_not_cancelled", error=str(e), allocations=[aid for aid, _, _ in queued])
            return
        log.info("queued_allocations_cancelled", allocations=[(aid, wf) for aid, wf, _ in queued])

    async def lose_worker(self, worker_id: int, reason: str, cause: Cause | None = None) -> None:
        running = await self.workers.worker_running_jobs(worker_id)
        await self.workers.finish_worker(worker_id, reason, state=A.WorkerStatus.LOST.value)
        now = time.time()
        await self.execution.record_exits(
            [
                Exit(j, r, a, WORKER_LOST_RC, now, f"worker {worker_id} lost: {reason}", cause=cause)
                for j, r, a in running
            ]
        )
        log.warning("worker_lost", worker_id=worker_id, reason=reason, jobs=len(running))


def _walltime(spec: SlurmSchedulerSpec) -> float:
    """Seconds of the scheduler's walltime; Slurm's 0 (no limit) as ten years."""
    return walltime_seconds(spec.walltime) or MAX_RUNTIME


def _link_output(private: str, log_dir: str, slurm_id: str) -> None:
    """Where the user looks (OUTPUT_DIR/slurm/), a link to the allocation's output; Slurm itself
    writes only to the private file, so a link planted or swapped here redirects nothing."""
    name = f"slurm_{slurm_id}.out"
    target = os.path.join(private, name)
    with contextlib.suppress(OSError):  # a convenience: never a reason to fail the allocation
        # Made now if Slurm has not made it yet (the allocation may wait in the queue): the link
        # must not lead nowhere. No O_TRUNC: what Slurm already wrote stays.
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        os.symlink(target, os.path.join(log_dir, name))
