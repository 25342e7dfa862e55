"""Dispatcher: hands ready jobs to the local executor and records what happened, in batches.

Jobs are claimed ahead (status `pending`), so that a slot freed by an exit
starts its next job at once, without waiting for the database. Each pass then
records, in one transaction, the jobs started and the exits that arrived since
the last pass, and tops the queue up. While claimed jobs keep the slots busy, a
pass waits a little to gather more (`core.pacing`): under a flood of short jobs
many transitions share one commit. While every slot is busy, the next jobs are sent ahead to
the shepherd, which starts each in the place of a job that ends: a short job's successor starts
without waiting for the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time

import structlog

from torcd import events as E
from torcd.bus import EventBus
from torcd.core.attempts import Exit, Runnable, Start
from torcd.core.exits import UNKNOWN_EXIT
from torcd.core.labels import ServedLabels
from torcd.core.pacing import Pace
from torcd.core.resources import Capacity, Requirements, fits
from torcd.faults import crash_point
from torcd.services.executor import UNKNOWN_EXIT_MESSAGE, LocalExecutor
from torcd.services.exit_log import ExitLog
from torcd.services.processes import find_attempt_processes, group_leader
from torcd.services.shepherd_link import wait_for_records_in_flight, wait_for_starts_in_flight
from torcd.store.execution import ExecutionStore

log = structlog.get_logger("torcd.dispatcher")
_WAKE = (
    E.JobReady,
    E.RetryDecided,
    E.RecoveryFinished,
    E.JobClassified,
    E.WorkflowCreated,
    E.JobsAdded,
    E.WorkflowReset,
    E.ActionFinished,
)  # an on_workflow_start action that ran lets its workflow's jobs start


class Dispatcher:
    def __init__(
        self,
        execution: ExecutionStore,
        bus: EventBus,
        api_url: str,
        max_cpus: int,
        exit_log: ExitLog,
        gpus: list[str] | None = None,
        max_memory: int = 1 << 62,
    ):
        self.execution, self.bus = execution, bus
        self.max_cpus, self.max_memory = max_cpus, max_memory
        self.host = socket.gethostname()
        self.exit_log = exit_log
        self.executor = LocalExecutor(api_url, self._on_exit, exit_log, gpus)
        self._exits: list[Exit] = []
        self._starts: list[Start] = []
        self._queue: collections.deque[Runnable] = collections.deque()  # claimed, `pending` in the store
        self._dropped: set[int] = set()  # sent ahead, then their workflow was canceled: never queued again
        self._returned = 0  # sent ahead and come back since the last start: first in line, in order
        self._wake = asyncio.Event()
        self._urgent = False  # the next pass runs at once: something new is ready, or nothing is queued
        self._hurry: asyncio.Future | None = None  # while a pass gathers: ends its wait
        self.pace = Pace(max_cpus)
        self._stopping = False
        self._kicking = False
        self._sub = bus.listen("dispatcher", (E.WorkflowCanceled, *_WAKE), self._on_event)
        self.labels = ServedLabels()  # a label newly served may let ready jobs start
        self.labels.on_change(self._wake_now)

    def _on_event(self, event) -> None:
        if isinstance(event, E.WorkflowCanceled):
            self._queue = collections.deque(j for j in self._queue if j.workflow_id != event.workflow_id)
            ahead = [job.job_id for job in self.executor.sent_ahead(event.workflow_id)]
            self._dropped.update(ahead)
            self.executor.withdraw(ahead)
        if isinstance(event, _WAKE):
            self._wake_now()

    def _wake_now(self) -> None:
        self._urgent = True
        self._end_gathering()
        self._wake.set()

    def _end_gathering(self) -> None:
        if self._hurry is not None and not self._hurry.done():
            self._hurry.set_result(None)

    def _wake_soon(self) -> None:
        """A start or an exit to record: at once if nothing is left queued to start meanwhile."""
        if not self._queue:
            self._wake_now()
        self._wake.set()

    def _on_exit(self, exit: Exit) -> None:
        self._exits.append(exit)
        self._kick()
        self._wake_soon()

    def _free(self) -> int:
        return self.max_cpus - self.executor.cpus_in_use

    def _kick(self) -> None:
        """Start queued jobs that fit now, in order. A job wider than the CPU or memory budget
        (its limit grown by a retry) runs alone; one needing more GPUs than the machine has, or
        more memory at first, was refused at submission."""
        if self._kicking:  # a launch that failed at once, reported from inside this loop
            return
        self._kicking = True
        try:
            self._start_what_fits()
        finally:
            self._kicking = False

    def _start_what_fits(self) -> None:
        self._returned = 0
        waiting = False  # an older job sent ahead does not fit yet: nothing queued passes it
        for job in self.executor.sent_ahead():
            if self._stopping or not self._fits(job):
                waiting = True
                break
            self.executor.go(job)
        while not waiting and self._queue and not self._stopping and self._fits(self._queue[0]):
            self._start(self._queue.popleft())
        room = self.executor.ahead_room()
        while self._queue and not self._stopping and room.admits(self._queue[0]):
            self._start(self._queue.popleft(), ahead=True)
            room = room.taken()

    def _fits(self, job: Runnable) -> bool:
        ex = self.executor
        need = Requirements(
            min(job.num_cpus, self.max_cpus), job.num_gpus, memory_bytes=min(job.memory or 0, self.max_memory)
        )
        free = Capacity(
            self._free(), self.max_memory - ex.memory_in_use, None if ex.gpus_free is None else len(ex.gpus_free)
        )
        return fits(need, free)

    def _start(self, job: Runnable, ahead: bool = False) -> None:
        self.executor.launch(
            job, lambda pid, at: self._started(job, pid, at), (lambda: self._withdrawn(job)) if ahead else None
        )

    def _withdrawn(self, job: Runnable) -> None:
        """A job sent ahead came back unstarted: first in line again (unless it was canceled)."""
        if job.job_id in self._dropped:
            self._dropped.discard(job.job_id)
            return
        self._queue.insert(self._returned, job)
        self._returned += 1
        self._wake_now()

    def _started(self, job: Runnable, pid: int | None, at: float) -> None:
        self._dropped.discard(job.job_id)  # withdrawn too late: recorded, then stopped as canceled
        if pid is not None:  # a launch that failed says nothing of the pace
            self.pace.started(at)
        self._starts.append(Start(job, pid, at))
        crash_point("after_start")
        log.debug("job_started", workflow_id=job.workflow_id, job_id=job.job_id, attempt_id=job.attempt_id, pid=pid)
        self._wake_soon()

    async def reconcile(self) -> None:
        """After a crash: adopt the jobs that kept running, record those that ended meanwhile
        (from the exit log), and put claimed jobs that never started back to ready."""
        # A request a dead daemon sent may still be starting its job: until that is done, the
        # processes cannot be told apart from the absent.
        await asyncio.to_thread(wait_for_starts_in_flight, self.exit_log.path)
        pending = set(await self.execution.pending_keys())
        running = await self.execution.running_attempts()
        if pending or running:
            keys = pending | {_key(j) for j in running}
            found = await asyncio.to_thread(find_attempt_processes, keys, self.executor.api_url)  # one pass over /proc
            leaders = {key: group_leader(found.get(key, [])) for key in keys}
            # Read after the leaders, and after the shepherds have recorded the shells that ended
            # (gone from the scan as zombies): a shell missing from it has its line there by now.
            alive = {pid for pids in found.values() for pid in pids}
            shepherded = await asyncio.to_thread(wait_for_records_in_flight, self.exit_log.path, alive)
            ended = self.exit_log.statuses()
            if pending:  # started if its shell is alive or left an exit status
                started = {key[0]: leaders[key] for key in pending if key in found or key in ended}
                await self.execution.adopt_pending(started, self.host)
                running = await self.execution.running_attempts()
            exits = []
            recorded_pids = await self.execution.running_pids()
            for job in running:
                pid = leaders.get(_key(job))
                rc = ended.get(_key(job))
                if pid is None and rc is None and recorded_pids.get(_key(job)) in shepherded:
                    # Its environment was rewritten (`exec env -i`, a process retitling itself),
                    # but the pid recorded at its start is still a running shell of a shepherd
                    # of ours, and a pid is reused only after its exit is in the log.
                    pid = recorded_pids[_key(job)]
                if pid is not None:
                    self.executor.adopt(job, pid)
                    continue
                exits.append(
                    Exit(
                        job.job_id,
                        job.run_id,
                        job.attempt_id,
                        UNKNOWN_EXIT if rc is None else rc,
                        time.time(),
                        UNKNOWN_EXIT_MESSAGE if rc is None else "ended while the daemon was down",
                    )
                )
            log.info("attempts_reconciled", adopted=len(self.executor.procs), ended=len(exits))
            crash_point("before_reconcile_recorded")
            await self.execution.record_exits(exits)
        # Only now that every status read is recorded may the older file go: rotating first
        # lost it when this daemon died before recording and the next one rotated again.
        # Adopted jobs that end from now on append to a fresh log; the current one stays readable.
        self.exit_log.rotate()

    async def run(self) -> None:
        self._wake.set()
        loop = asyncio.get_running_loop()
        try:
            self.executor.prepare()
        except OSError as e:
            log.warning("shepherd_not_started", error=str(e))
        while True:
            await self._wake.wait()
            if pause := self.pace.gather(len(self._queue), self._urgent or self._stopping):
                self._hurry = loop.create_future()
                timer = loop.call_later(pause, self._end_gathering)
                await self._hurry
                timer.cancel()
                self._hurry = None
            self._wake.clear()
            self._urgent = False
            exits, self._exits = self._exits, []
            starts, self._starts = self._starts, []
            # Keep enough claimed to fill every free slot, and more ahead at a fast pace.
            ahead = self.pace.ahead(time.time())
            waiting = len(self._queue) + len(self.executor.sent_ahead())
            want = 0 if self._stopping else max(0, self._free() + ahead - waiting)
            # A labelled job is claimed only to start now: its label may stop being served.
            now = 0 if self._stopping else max(0, self._free() - len(self._queue))
            claimed, stale = await self.execution.dispatch(exits, starts, want, self.host, self.labels.served(), now)
            if exits:
                self.exit_log.count(len(exits))
            if stale:
                await self.executor.kill(stale)
            if claimed:
                crash_point("after_claim")
                for job in claimed:  # a retry goes ahead of first attempts already claimed
                    self._queue.appendleft(job) if job.attempt_id > 1 else self._queue.append(job)
            self._kick()

    async def stop(self, grace: float) -> None:
        """Stop starting jobs; terminate running ones and record them as terminated."""
        self._stopping = True
        exits = await self.executor.stop_all(grace)
        starts, self._starts = self._starts, []
        pending, self._exits = self._exits, []
        await self.execution.dispatch(pending, starts, 0, self.host)
        await self.execution.terminate(exits)
        await self.execution.adopt_pending({}, self.host)  # claimed, never started: ready again
        self._queue.clear()
        self._sub.close()


def _key(job: Runnable) -> tuple[int, int, int]:
    return job.job_id, job.run_id, job.attempt_id
