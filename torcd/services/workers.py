"""Workers in Slurm allocations: who may act for which worker, and what a poll does.

A worker's poll reports what happened since the last one (starts, exits, recovery results) and
takes what fits its free CPUs. Every report is checked against what was handed to that worker;
an allocation's credential acts only for that allocation's workers. The end times a worker
reports are its clock's: each is kept between when its attempt was handed out and now.
"""

from __future__ import annotations

import time

import structlog

from torcd import protocol as p
from torcd.core import allocations as A
from torcd.core.attempts import Exit
from torcd.credentials import Caller
from torcd.errors import NotFound, Unauthorized
from torcd.services.allocations import AllocationService
from torcd.store.store import Store

log = structlog.get_logger("torcd.workers")
CLOCK_SKEW = 60.0  # seconds a node's clock may be off before a kept-in-range end time is worth a warning


def bounded_end_time(reported: float, handed_out: float, now: float) -> float:
    """An exit happened after its attempt was handed out and before the daemon heard of it,
    whatever the worker's clock (or a forged report) says."""
    return min(max(reported, handed_out), now)


class WorkerService:
    def __init__(self, store: Store, allocations: AllocationService, poll_interval: float):
        self.store, self.allocations = store, allocations
        self.poll_interval = poll_interval
        self._credentials: dict[int, tuple[str, int]] = {}

    async def credential(self, aid: int) -> tuple[str, int] | None:
        """(hash, workflow id) of an allocation's worker credential; cached, they never change."""
        known = self._credentials.get(aid)
        if known is None:
            known = await self.store.allocation_credential(aid)
            if known is not None:
                self._credentials[aid] = known
        return known

    async def register(self, params: p.RegisterWorker, caller: Caller) -> int:
        if not caller.admin:
            if (params.workflow_id, params.allocation_id) != (caller.workflow_id, caller.allocation_id):
                raise Unauthorized(f"this credential is for allocation {caller.allocation_id} of workflow "
                                   f"{caller.workflow_id}, not allocation {params.allocation_id} of workflow "
                                   f"{params.workflow_id}")
            if not A.is_open(await self.store.allocation_state(caller.allocation_id)):
                raise Unauthorized(f"allocation {caller.allocation_id} has ended; its credential no longer "
                                   "registers workers")
        return await self.store.register_worker(params.workflow_id, params.allocation_id, params.host, params.cpus,
                                                params.resume)

    async def _own(self, worker_id: int, caller: Caller):
        """The worker's row, if the caller may act for it: admin, or its own allocation's credential
        (which learns nothing of other workers, not even whether they exist)."""
        try:
            w = await self.store.worker(worker_id)
        except NotFound:
            if caller.admin:
                raise
            w = None
        if not caller.admin and (w is None or w["allocation_id"] != caller.allocation_id):
            raise Unauthorized(f"worker {worker_id} does not belong to allocation {caller.allocation_id}")
        return w

    def forget(self, workflow_id: int) -> None:
        """A deleted workflow's allocation credentials stop working at once."""
        for aid in [a for a, (_, wf) in self._credentials.items() if wf == workflow_id]:
            del self._credentials[aid]

    async def poll(self, params: p.WorkerPoll, caller: Caller, api_url: str) -> p.WorkerPollResult:
        w = await self._own(params.worker_id, caller)
        if w["state"] != A.WorkerStatus.ACTIVE.value:
            return p.WorkerPollResult(stop=True)
        # An allocation Slurm has ended takes no more work, however alive its worker says it is;
        # what it reports is still recorded.
        ended = w["allocation_id"] is not None and not A.is_open(w["allocation_state"])
        mine = await self.store.worker_attempt_starts(params.worker_id)
        if params.started:
            await self.store.set_pids([(s.pid, s.job_id, s.run_id, s.attempt_id) for s in params.started
                                       if (s.job_id, s.run_id, s.attempt_id) in mine])
        await self.store.record_exits([self._exit(e, mine[key], w) for e in params.exits
                                       if (key := (e.job_id, e.run_id, e.attempt_id)) in mine])
        for r in params.recoveries:  # only those handed to this worker
            await self.store.finish_recovery(r, worker_id=params.worker_id)
        if params.abandon:  # a worker that took over a dead one's journal cannot watch what it started
            left = await self.store.worker_running_jobs(params.worker_id)
            await self.store.record_exits([Exit(j, r, a, 137, time.time(), "its worker died; the one that took "
                                                "over its journal cannot watch it", w["workflow_id"])
                                           for j, r, a in left])
        if ended:
            await self.store.heartbeat(params.worker_id)
            return p.WorkerPollResult(stop=True, api_url=api_url)
        if params.claim and params.free_cpus > 0:
            jobs = await self.store.claim_for_worker(params.worker_id, params.free_cpus, params.free_memory,
                                                     params.free_gpus, params.time_left)  # heartbeats too
        else:
            jobs = []
            await self.store.heartbeat(params.worker_id)
        waiting = await self.store.worker_waiting(params.worker_id)
        # Only an idle worker asks itself whether to leave: a busy one is not told (it costs a query).
        may_come = bool(jobs or waiting) or await self.store.worker_may_get_more(
            w, params.time_left, params.free_memory, params.free_gpus)
        return p.WorkerPollResult(jobs=jobs, recoveries=await self.store.worker_recoveries(params.worker_id),
                                  waiting=waiting, api_url=api_url, may_come=int(may_come))

    @staticmethod
    def _exit(e: p.ExitReport, handed_out: float, w) -> Exit:
        end_time = bounded_end_time(e.end_time, handed_out, time.time())
        if abs(end_time - e.end_time) > CLOCK_SKEW:
            log.warning("end_time_out_of_range", worker_id=w["id"], workflow_id=w["workflow_id"], job_id=e.job_id,
                        attempt_id=e.attempt_id, reported=e.end_time, recorded=end_time)
        return Exit(e.job_id, e.run_id, e.attempt_id, e.return_code, end_time, e.message, w["workflow_id"], e.cause,
                    e.peak_memory, e.cpu_seconds)

    async def finish(self, params: p.WorkerFinish, caller: Caller) -> None:
        w = await self._own(params.worker_id, caller)
        left = await self.store.worker_running_jobs(params.worker_id)
        d = A.handle(A.FinishReported(time.time(), params.reason, len(left)),
                     A.Worker(w["id"], w["workflow_id"], A.WorkerStatus(w["state"]), w["allocation_id"],
                              w["last_heartbeat"]))
        if d.status == A.WorkerStatus.LOST:
            await self.allocations.lose_worker(params.worker_id, d.reason)
        elif d.status is not None:
            await self.store.finish_worker(params.worker_id, d.reason, d.status.value)
