"""Dispatcher: records exits and hands ready jobs to the executor, in batches.

Each pass drains every exit that arrived, records them in one transaction,
then claims as many ready jobs as the CPU budget allows in another: under
load, many transitions share one commit.
"""

from __future__ import annotations

import asyncio
import socket
import time

import structlog

from torcd.bus import EventBus
from torcd.faults import crash_point
from torcd.services.executor import LocalExecutor
from torcd.services.processes import find_attempt_processes, kill_pids
from torcd.store import Exit, Store

log = structlog.get_logger("torcd.dispatcher")
ORPHAN_RETURN_CODE = 137  # as if SIGKILLed: the daemon died and the attempt's process was stopped
_WAKE_KINDS = frozenset({"job_ready", "retry_decided", "recovery_finished", "job_classified",
                         "workflow_created", "workflow_reset", "job_completed"})


class Dispatcher:
    def __init__(self, store: Store, bus: EventBus, api_url: str, max_cpus: int):
        self.store, self.bus = store, bus
        self.max_cpus = max_cpus
        self.host = socket.gethostname()
        self.executor = LocalExecutor(api_url, self._on_exit)
        self._exits: list[Exit] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._sub = bus.subscribe("dispatcher", accept=self._poke)

    def _poke(self, event) -> bool:
        if event.kind in _WAKE_KINDS:
            self._wake.set()
        return False  # never queued: a wake-up is all the dispatcher needs

    def _on_exit(self, exit: Exit) -> None:
        self._exits.append(exit)
        self._wake.set()

    async def reconcile(self) -> None:
        """Stop attempts a crashed daemon left running and record them as exited 137."""
        open_attempts = await self.store.open_attempts()
        if not open_attempts:
            return
        keys = {(j, r, a) for j, r, a, _ in open_attempts}
        found = await asyncio.to_thread(find_attempt_processes, keys)
        pids = [pid for pids in found.values() for pid in pids]
        await asyncio.to_thread(kill_pids, pids)
        now = time.time()
        exits = [Exit(j, r, a, ORPHAN_RETURN_CODE, now, "the daemon restarted while this attempt ran; "
                      "its processes were stopped") for j, r, a in keys]
        log.warning("orphaned_attempts_stopped", attempts=len(exits), processes=len(pids))
        await self.store.record_exits(exits)

    async def run(self) -> None:
        self._wake.set()
        pids: list[tuple[int, int, int, int]] = []
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            exits, self._exits = self._exits, []
            free = 0 if self._stopping else self.max_cpus - self.executor.cpus_in_use
            claimed = await self.store.dispatch(exits, pids, free, self.host)
            pids = []
            for e in exits:
                log.debug("job_exited", workflow_id=e.workflow_id, job_id=e.job_id, attempt_id=e.attempt_id,
                          return_code=e.return_code)
            if not claimed and not self.executor.procs and not self._stopping:
                # A job asking for more CPUs than the budget runs alone rather than never.
                need = await self.store.oldest_ready_job_cpus()
                if need is not None and need > self.max_cpus:
                    claimed = await self.store.claim_ready(need, self.host, limit=1)
            if claimed:
                crash_point("after_claim")
            for job in claimed:
                pid = await self.executor.start(job)
                if pid is not None:
                    pids.append((pid, job.job_id, job.run_id, job.attempt_id))
                    log.debug("job_started", workflow_id=job.workflow_id, job_id=job.job_id,
                              attempt_id=job.attempt_id, pid=pid)
            if pids:
                crash_point("after_start")
                # Pids ride along with the next pass; make sure one comes soon.
                loop.call_later(0.05, self._wake.set)

    async def stop(self, grace: float) -> None:
        """Stop starting jobs; terminate running ones and record them as terminated."""
        self._stopping = True
        exits = await self.executor.stop_all(grace)
        pending, self._exits = self._exits, []
        await self.store.record_exits(pending)
        await self.store.terminate(exits)
        self._sub.close()
