"""RecoveryRunner: runs a rule's recovery script before a retry.

Exit 0 puts the job back to `ready` with the next attempt; anything else
(non-zero, killed, timed out, not runnable) fails it. A script that was
running when the daemon died runs again on restart, so scripts should be
idempotent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import structlog

from torcd.bus import EventBus
from torcd.core.retry import signal_return_code
from torcd.faults import crash_point
from torcd.services.processes import (WatchedProcess, find_attempt_processes, job_env, kill_pids, log_files,
                                      missing_directory, shell_prelude, spawn_shell, start_failure, stop_group,
                                      unstartable_input)
from torcd.protocol import RecoveryReport
from torcd.store import Recovery, Store, stdio_paths

log = structlog.get_logger("torcd.recovery")


def describe_exit(script: str, rc: int) -> str:
    if rc == 127:
        return f"recovery script not found: {script!r} (exit 127)"
    if rc == 126:
        return f"recovery script not executable: {script!r} (exit 126)"
    if rc > 128:
        return f"recovery script killed by signal {rc - 128} (exit {rc})"
    return f"recovery script exited {rc}"


async def run_recovery_script(rec: Recovery, api_url: str, on_start=lambda proc: None) -> RecoveryReport:
    """Run one recovery script to the end and say how it went."""
    out_path, err_path = stdio_paths(rec.output_dir, "recovery", rec.workflow_id, rec.job_id,
                                     rec.run_id, rec.attempt_id)
    env = job_env(dict(os.environ), workflow_id=rec.workflow_id, job_id=rec.job_id, name=rec.name,
                  run_id=rec.run_id, attempt_id=rec.attempt_id, api_url=api_url,
                  output_dir=rec.output_dir, extra=rec.env)
    env["TORC_RETURN_CODE"] = str(rec.return_code)
    started = time.monotonic()

    def report(ok: bool, rc: int | None, message: str) -> RecoveryReport:
        return RecoveryReport(rec.job_id, rec.run_id, rec.attempt_id, ok, rc, message,
                              round(time.monotonic() - started, 6))
    try:
        if bad := unstartable_input({"recovery script": rec.script, "output directory": rec.output_dir,
                                     "working directory": rec.cwd}, rec.env):
            raise bad
        if gone := missing_directory(rec.cwd):
            raise gone
        with log_files(out_path, err_path) as (out, err):
            proc = spawn_shell(shell_prelude(rec.cwd) + rec.script, env=env, stdout=out, stderr=err)
    except (OSError, ValueError) as e:  # the job fails with the reason; never left `recovering`
        return report(False, None, f"recovery script {start_failure(e)}")
    on_start(proc)
    try:
        rc = signal_return_code(await asyncio.wait_for(proc.wait(), rec.timeout))
    except TimeoutError:
        await stop_group(proc, 5.0)
        return report(False, signal_return_code(proc.returncode or -signal.SIGKILL),
                      f"recovery script timed out after {rec.timeout:g}s")
    if rc == 0:
        return report(True, 0, f"recovery script succeeded; retrying as attempt {rec.attempt_id + 1}")
    return report(False, rc, describe_exit(rec.script, rc))


class RecoveryRunner:
    def __init__(self, store: Store, bus: EventBus, api_url: str):
        self.store, self.api_url = store, api_url
        self.running: dict[int, WatchedProcess | None] = {}
        self._tasks: set[asyncio.Task] = set()
        self._sub = bus.subscribe("recovery", maxsize=100_000,
                                  accept=lambda e: (e.kind == "retry_decided" and e.action == "recover")
                                  or e.kind in ("worker_finished", "worker_lost"))

    async def reconcile(self) -> None:
        """Run again the scripts of jobs left `recovering`, after stopping any leftover copy."""
        pending = await self.store.recoveries_to_run()
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
                recs = await self.store.recoveries_to_run()
            else:
                workers_left = any(e.kind != "retry_decided" for e in batch)
                recs = await self.store.recoveries_to_run(
                    None if workers_left else [e.job_id for e in batch if e.job_id])
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
            log.info("recovery_finished", workflow_id=rec.workflow_id, job_id=rec.job_id,
                     attempt_id=rec.attempt_id, return_code=report.return_code, ok=report.ok)
            await self.store.finish_recovery(report)
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
