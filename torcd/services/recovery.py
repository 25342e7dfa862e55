"""RecoveryRunner: runs a rule's recovery script before a retry.

Exit 0 puts the job back to `ready` with the next attempt; anything else
(non-zero, killed, timed out, not runnable) fails it. A script that was
running when the daemon died runs again on restart, so scripts should be
idempotent.
"""

from __future__ import annotations

import asyncio

import structlog

from torcd import events as E
from torcd.bus import EventBus
from torcd.faults import crash_point
from torcd.protocol import Recovery
from torcd.services.processes import WatchedProcess, find_attempt_processes, kill_pids, stop_group
from torcd.services.recovery_script import run_recovery_script
from torcd.store.execution import ExecutionStore

log = structlog.get_logger("torcd.recovery")


class RecoveryRunner:
    def __init__(self, execution: ExecutionStore, bus: EventBus, api_url: str):
        self.execution, self.api_url = execution, api_url
        self.running: dict[int, WatchedProcess | None] = {}
        self._tasks: set[asyncio.Task] = set()
        self._sub = bus.subscribe(
            "recovery",
            maxsize=100_000,
            kinds=(E.RetryDecided, E.WorkerFinished, E.WorkerLost),
            accept=lambda e: not isinstance(e, E.RetryDecided) or e.action == "recover",
        )

    async def reconcile(self) -> None:
        """Run again the scripts of jobs left `recovering`, after stopping any leftover copy."""
        pending = await self.execution.recoveries_to_run()
        keys = {(r.job_id, r.run_id, r.attempt_id) for r in pending}
        found = await asyncio.to_thread(find_attempt_processes, keys, self.api_url, True)
        await asyncio.to_thread(kill_pids, [p for pids in found.values() for p in pids])
        for rec in pending:
            self._spawn(rec)

    async def run(self) -> None:
        while True:
            first = await self._sub.get()
            batch = [first, *self._sub.drain()]
            if self._sub.overflowed.is_set():
                self._sub.overflowed.clear()
                recs = await self.execution.recoveries_to_run()
            else:
                workers_left = not all(isinstance(e, E.RetryDecided) for e in batch)
                recs = await self.execution.recoveries_to_run(
                    None if workers_left else [e.job_id for e in batch if e.job_id]
                )
            for rec in recs:
                self._spawn(rec)

    def _spawn(self, rec: Recovery) -> None:
        if rec.job_id in self.running:
            return
        self.running[rec.job_id] = None
        task = asyncio.create_task(self._run_one(rec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_one(self, rec: Recovery) -> None:
        try:
            report = await run_recovery_script(rec, self.api_url, self._hold(rec.job_id))
            crash_point("before_recovery_recorded")
            log.info(
                "recovery_finished",
                workflow_id=rec.workflow_id,
                job_id=rec.job_id,
                attempt_id=rec.attempt_id,
                return_code=report.return_code,
                ok=report.ok,
            )
            await self.execution.finish_recovery(report)
        finally:
            self.running.pop(rec.job_id, None)

    def _hold(self, job_id: int):
        def hold(proc: WatchedProcess) -> None:
            self.running[job_id] = proc

        return hold

    async def kill(self, job_ids: list[int]) -> None:
        procs = [self.running.get(j) for j in job_ids]
        await asyncio.gather(*(stop_group(p, 2.0) for p in procs if p is not None))

    async def stop(self) -> None:
        """At shutdown: stop scripts; their jobs stay `recovering` and rerun on restart."""
        self._sub.close()
        for task in self._tasks:
            task.cancel()
        procs = [p for p in self.running.values() if p is not None]
        await asyncio.gather(*(stop_group(p, 2.0) for p in procs), return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
