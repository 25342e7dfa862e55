"""ActionRunner: runs a workflow's actions when they come due (`store_actions`, `core.actions`).

`run_commands` runs each command in turn in the workflow's directory, its output in
OUTPUT_DIR/actions/, stopping at the first that fails; `schedule_nodes` submits allocations for
a scheduler. Each firing is an `action_started` and an `action_finished` event; a failed action
changes no job.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time

import structlog

from torcd import events as E
from torcd.bus import EventBus
from torcd.core.retry import signal_return_code
from torcd.services.allocations import AllocationService
from torcd.services.processes import (
    WatchedProcess,
    find_action_processes,
    kill_pids,
    spawn_logged,
    start_failure,
    stop_group,
    unmarked,
)
from torcd.services.recovery_script import describe_exit
from torcd.store.actions import ActionStore, ActionToRun
from torcd.store.queries import Queries

log = structlog.get_logger("torcd.actions")
SETTLE = 0.1  # seconds: a burst of job events becomes one look at the counts


def action_logs(run: ActionToRun) -> tuple[str, str]:
    stem = os.path.join(run.output_dir, "actions", f"action_wf{run.workflow_id}_{run.action.index}_r{run.run_id}")
    return stem + ".o", stem + ".e"


class ActionRunner:
    def __init__(
        self, actions: ActionStore, queries: Queries, bus: EventBus, allocations: AllocationService, api_url: str
    ):
        self.actions, self.queries = actions, queries
        self.allocations, self.api_url = allocations, api_url
        self._touched: set[int] = set()
        self._wake = asyncio.Event()
        self._procs: dict[int, tuple[int, WatchedProcess]] = {}  # action id -> its workflow, its command running now
        self._stopped: dict[int, str] = {}  # action id -> why its command was stopped
        self._tasks: set[asyncio.Task] = set()
        self._task_of: dict[int, asyncio.Task] = {}  # action id -> the task running it
        self._turns: dict[int, asyncio.Lock] = {}  # one action of a workflow at a time, in the order they came due
        self._queued: set[int] = set()  # actions waiting for their turn or running
        bus.listen("actions", None, self._on_event)

    def _on_event(self, event: E.EventBase) -> None:
        if event.workflow_id in self.actions.with_actions and not isinstance(
            event, (E.ActionStarted, E.ActionFinished)
        ):
            self._touched.add(event.workflow_id)
            self._wake.set()

    async def reconcile(self) -> None:
        """At start: commands an earlier daemon left running are stopped, and the actions they
        belonged to run again from their first command (their jobs wait for them as before)."""
        await self.actions.load_action_workflows()
        leftovers = await asyncio.to_thread(find_action_processes, self.api_url)
        if leftovers:
            log.info("action_leftovers_stopped", pids=leftovers)
            await asyncio.to_thread(kill_pids, leftovers)
        await self.actions.interrupt_actions()
        self._touched.update(self.actions.with_actions)
        self._wake.set()

    async def run(self) -> None:
        pause = SETTLE
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(pause)
                self._wake.clear()
                touched, self._touched = sorted(self._touched), set()
                began = time.monotonic()
                due = await self.actions.due_actions(touched)
                # Counting the jobs of large workflows costs: keep it under a tenth of the time.
                pause = max(SETTLE, 9 * (time.monotonic() - began))
                for run in due:
                    if run.id not in self._queued:
                        self._queued.add(run.id)
                        task = asyncio.create_task(self._run(run))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                        self._task_of[run.id] = task
                        task.add_done_callback(functools.partial(self._ended, run.id))
        finally:
            await asyncio.gather(*(stop_group(p, 2.0) for _, p in self._procs.values()), return_exceptions=True)

    def _ended(self, action_id: int, _: asyncio.Task) -> None:
        self._task_of.pop(action_id, None)

    async def stop_workflow(self, wf: int, why: str) -> None:
        """Stop the command an action of this workflow is running (canceled, deleted)."""
        stopping = [(aid, proc) for aid, (w, proc) in self._procs.items() if w == wf]
        for aid, _ in stopping:
            self._stopped[aid] = why
        await asyncio.gather(*(stop_group(proc, 2.0) for _, proc in stopping), return_exceptions=True)
        # Answer once what was stopped is recorded: the caller's next read shows how each ended.
        ending = [asyncio.shield(self._task_of[aid]) for aid, _ in stopping if aid in self._task_of]
        await asyncio.gather(*ending, return_exceptions=True)

    async def _run(self, run: ActionToRun) -> None:
        try:
            async with self._turns.setdefault(run.workflow_id, asyncio.Lock()):
                if await self.actions.start_action(run):
                    await self._run_now(run)
        finally:
            self._queued.discard(run.id)

    async def _run_now(self, run: ActionToRun) -> None:
        log.info("action_started", workflow_id=run.workflow_id, action=run.action.index, trigger=run.action.trigger)
        try:
            if run.action.action_type == "run_commands":
                ok, rc, message = await self._commands(run)
            else:
                ok, rc, message = await self._schedule(run)
        except Exception as e:  # an action's failure is recorded; it must not end the runner
            log.exception("action_error", workflow_id=run.workflow_id, action=run.action.index)
            ok, rc, message = False, None, f"internal error: {e}"
        await self.actions.finish_action(run, ok, message, rc)

    async def _commands(self, run: ActionToRun) -> tuple[bool, int | None, str]:
        out_path, err_path = action_logs(run)
        # TORC_ACTION_ID marks its processes: a restarted daemon finds what an earlier one left.
        env = dict(
            unmarked(dict(os.environ)),
            TORC_WORKFLOW_ID=str(run.workflow_id),
            TORC_RUN_ID=str(run.run_id),
            TORC_API_URL=self.api_url,
            TORC_OUTPUT_DIR=run.output_dir,
            TORC_ACTION_TRIGGER=run.action.trigger,
            TORC_ACTION_ID=str(run.id),
        )
        for n, command in enumerate(run.action.commands, 1):
            try:
                proc = spawn_logged(
                    command,
                    cwd=run.cwd,
                    env=env,
                    out_path=out_path,
                    err_path=err_path,
                    checked={"command": command},
                    user_env={},
                )
            except (OSError, ValueError) as e:
                return False, None, f"command {n} could not start: {start_failure(e)}"
            self._procs[run.id] = (run.workflow_id, proc)
            try:
                status = await proc.wait()
                assert status is not None  # our own child, reaped: how it ended is known
                rc = signal_return_code(status)
            finally:
                self._procs.pop(run.id, None)
            if why := self._stopped.pop(run.id, None):
                return False, rc, f"command {n} of {len(run.action.commands)} stopped: {why}"
            if rc != 0:
                said = describe_exit(command, rc, "command")
                return False, rc, f"command {n} of {len(run.action.commands)} failed: {said}; output in {err_path}"
        n = len(run.action.commands)
        return True, 0, f"ran {n} command{'s' if n > 1 else ''}; output in {out_path}"

    async def _schedule(self, run: ActionToRun) -> tuple[bool, int | None, str]:
        info = await self.queries.workflow(run.workflow_id)
        if info.executor != "slurm":
            return False, None, "schedule_nodes needs a workflow submitted with `torcctl submit-slurm`"
        a = run.action
        ids = await self.allocations.submit(
            run.workflow_id, f"action {a.index} ({a.trigger})", count=a.num_allocations, scheduler=a.scheduler
        )
        return bool(ids), None, f"submitted {len(ids)} allocations for scheduler {a.scheduler!r}"
