"""AutoScheduler: keeps Slurm allocations coming for ready (and retried) jobs.

The decision is `torcd.core.autoschedule.decide_auto_schedule`; this service
gathers its inputs for every workflow with the policy on, submits when told
to, and records each decision that submits (or changes its reason) as an event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from torcd import events as E
from torcd.bus import EventBus
from torcd.core.autoschedule import decide_auto_schedule
from torcd.services.allocations import AllocationService
from torcd.store.slurm import SlurmStore

log = structlog.get_logger("torcd.autoschedule")
_WAKE = (
    E.RetryDecided,
    E.RecoveryFinished,
    E.JobClassified,
    E.AllocationFinished,
    E.WorkerFinished,
    E.WorkerLost,
    E.AutoScheduleSet,
    E.WorkflowReset,
    E.JobsAdded,
    E.JobReady,
)


class AutoScheduler:
    def __init__(
        self,
        slurm: SlurmStore,
        bus: EventBus,
        allocations: AllocationService,
        interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ):
        self.slurm, self.allocations = slurm, allocations
        self.interval = interval
        self.clock = clock
        self._wake = asyncio.Event()
        self._last_reason: dict[tuple[int, str], str] = {}
        self._sub = bus.listen("autoscheduler", _WAKE, lambda _: self._wake.set())

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await asyncio.sleep(0.2)  # let a burst of events settle into one decision
            await self.tick()

    async def tick(self) -> None:
        for wf, policy, last_submit in await self.slurm.auto_scheduled_workflows():
            for scheduler in await self.slurm.schedulers(wf):
                now = self.clock()
                inputs = await self.slurm.schedule_inputs(wf, scheduler, last_submit)
                decision = decide_auto_schedule(policy, inputs, now)
                key = (wf, scheduler)
                if not decision.submit:
                    if self._last_reason.get(key) != decision.why:
                        self._last_reason[key] = decision.why
                        await self.slurm.record_event(
                            wf, E.AutoScheduleDecided, action="wait", message=f"[{scheduler}] {decision.reason}"
                        )
                    continue
                self._last_reason.pop(key, None)
                await self.slurm.record_event(
                    wf,
                    E.AutoScheduleDecided,
                    action="submit",
                    rule_index=decision.rule,
                    message=f"[{scheduler}] {decision.reason}",
                )
                log.info(
                    "auto_schedule_submit",
                    workflow_id=wf,
                    scheduler=scheduler,
                    rule=decision.rule,
                    reason=decision.reason,
                )
                await self.allocations.submit(
                    wf, f"auto-schedule rule {decision.rule}: {decision.reason}", scheduler=scheduler, auto=True
                )
                last_submit = now
