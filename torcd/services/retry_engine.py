"""RetryEngine: turns recorded non-zero exits into failure-handler decisions.

The decision itself is `torcd.core.retry.decide`; this service only finds the
exits that need one (from events, or from the tables after a restart) and
writes the outcome.
"""

from __future__ import annotations

import structlog

from torcd import events as E
from torcd.bus import EventBus
from torcd.core.attempts import Failure
from torcd.core.retry import decide
from torcd.faults import crash_point
from torcd.store.execution import ExecutionStore

log = structlog.get_logger("torcd.retry")


def _attempt_of(e: E.EventBase) -> tuple[int, int, int]:
    """The attempt a job_exited event is about: the lifecycle always names it."""
    assert isinstance(e, E.JobExited) and e.job_id is not None and e.run_id is not None and e.attempt_id is not None
    return e.job_id, e.run_id, e.attempt_id


class RetryEngine:
    def __init__(self, execution: ExecutionStore, bus: EventBus):
        self.execution = execution
        self._sub = bus.subscribe("retry_engine", maxsize=100_000, kinds=(E.JobExited,))

    async def reconcile(self) -> None:
        await self._apply(await self.execution.failures_awaiting_decision())

    async def run(self) -> None:
        while True:
            first = await self._sub.get()
            batch = [first, *self._sub.drain()]
            if self._sub.overflowed.is_set():
                self._sub.overflowed.clear()
                await self.reconcile()
                continue
            keys = [_attempt_of(e) for e in batch]
            await self._apply(await self.execution.failures_for(keys))

    async def _apply(self, failures: list[Failure]) -> None:
        if not failures:
            return
        crash_point("before_decision")
        decisions = [
            (
                f,
                decide(
                    f.rules,
                    attempt=f.attempt_id,
                    return_code=f.return_code,
                    use_pending_failed=f.use_pending_failed,
                    cause=f.cause,
                ),
            )
            for f in failures
        ]
        await self.execution.apply_decisions(decisions)
        for f, d in decisions:
            log.info(
                "retry_decided",
                workflow_id=f.workflow_id,
                job_id=f.job_id,
                attempt_id=f.attempt_id,
                return_code=f.return_code,
                rule_index=d.rule_index,
                action=d.action.value,
            )

    def close(self) -> None:
        self._sub.close()
