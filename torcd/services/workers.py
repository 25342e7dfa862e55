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
from torcd.credentials import Caller
from torcd.errors import NotFound, Unauthorized
from torcd.faults import crash_point
from torcd.services.allocations import AllocationService
from torcd.store.slurm import SlurmStore
from torcd.store.workers import WorkerStore, check_owner

log = structlog.get_logger("torcd.workers")


class WorkerService:
    def __init__(self, workers: WorkerStore, slurm: SlurmStore, allocations: AllocationService, poll_interval: float):
        self.workers, self.slurm, self.allocations = workers, slurm, allocations
        self.poll_interval = poll_interval
        self._credentials: dict[int, tuple[str, int]] = {}

    async def credential(self, aid: int) -> tuple[str, int] | None:
        """(hash, workflow id) of an allocation's worker credential; cached, they never change."""
        known = self._credentials.get(aid)
        if known is None:
            known = await self.slurm.allocation_credential(aid)
            if known is not None:
                self._credentials[aid] = known
        return known

    async def register(self, params: p.RegisterWorker, caller: Caller) -> int:
        if not caller.admin:
            if (params.workflow_id, params.allocation_id) != (caller.workflow_id, caller.allocation_id):
                raise Unauthorized(
                    f"this credential is for allocation {caller.allocation_id} of workflow "
                    f"{caller.workflow_id}, not allocation {params.allocation_id} of workflow "
                    f"{params.workflow_id}"
                )
            assert caller.allocation_id is not None  # not admin: an allocation's credential
            if not A.is_open(await self.slurm.allocation_state(caller.allocation_id)):
                raise Unauthorized(
                    f"allocation {caller.allocation_id} has ended; its credential no longer registers workers"
                )
        return await self.workers.register_worker(
            params.workflow_id, params.allocation_id, params.host, params.cpus, params.resume
        )

    async def _own(self, worker_id: int, caller: Caller):
        """The worker's row, if the caller may act for it (`check_owner`)."""
        try:
            w = await self.workers.worker(worker_id)
        except NotFound:
            w = None
        check_owner(w, worker_id, caller)
        return w

    def forget(self, workflow_id: int) -> None:
        """A deleted workflow's allocation credentials stop working at once."""
        for aid in [a for a, (_, wf) in self._credentials.items() if wf == workflow_id]:
            del self._credentials[aid]

    async def poll(self, params: p.WorkerPoll, caller: Caller, api_url: str) -> p.WorkerPollResult:
        """Record what the worker reports and hand it what fits, in one store transaction (the
        caller's right to act for the worker is checked in it)."""
        reply = await self.workers.poll(params, caller)
        if params.exits:
            crash_point("after_exits_committed")  # the worker, unanswered, sends them again
        for e, recorded in reply.clamped:
            log.warning(
                "end_time_out_of_range",
                worker_id=params.worker_id,
                workflow_id=reply.workflow_id,
                job_id=e.job_id,
                attempt_id=e.attempt_id,
                reported=e.end_time,
                recorded=recorded,
            )
        if not reply.active:
            return p.WorkerPollResult(stop=True)
        if reply.stop:  # its allocation has ended
            return p.WorkerPollResult(stop=True, api_url=api_url)
        if not (reply.may_come or reply.jobs or reply.recoveries or reply.waiting):
            # The worker may leave now, and its allocation end: the workflow's allocations still
            # queued (the next of a chain) are cancelled first, before Slurm can start one.
            await self.allocations.cancel_queued_without_work(reply.workflow_id)
        return p.WorkerPollResult(
            jobs=reply.jobs,
            recoveries=reply.recoveries,
            waiting=reply.waiting,
            api_url=api_url,
            may_come=int(reply.may_come),
        )

    async def finish(self, params: p.WorkerFinish, caller: Caller) -> None:
        w = await self._own(params.worker_id, caller)
        left = await self.workers.worker_running_jobs(params.worker_id)
        d = A.handle(
            A.FinishReported(time.time(), params.reason, len(left)),
            A.Worker(w["id"], w["workflow_id"], A.WorkerStatus(w["state"]), w["allocation_id"], w["last_heartbeat"]),
        )
        if d.status == A.WorkerStatus.LOST:
            assert d.reason is not None  # a worker's end says why
            await self.allocations.lose_worker(params.worker_id, d.reason)
        elif d.status is not None:
            assert d.reason is not None  # a worker's end says why
            await self.workers.finish_worker(params.worker_id, d.reason, d.status.value)
