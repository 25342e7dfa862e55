"""Running one recovery script to its end, as the daemon and a worker both do, and saying how it went."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from torcd.core.attempts import stdio_paths
from torcd.core.exits import CANNOT_EXECUTE, NOT_FOUND, SIGNAL_EXIT, signal_return_code
from torcd.protocol import Recovery, RecoveryReport
from torcd.services.processes import job_vars, spawn_logged, start_failure, stop_group, unmarked


def describe_exit(script: str, rc: int, what: str = "recovery script") -> str:
    if rc == NOT_FOUND:
        return f"{what} not found: {script!r} (exit {NOT_FOUND})"
    if rc == CANNOT_EXECUTE:
        return f"{what} not executable: {script!r} (exit {CANNOT_EXECUTE})"
    if rc > SIGNAL_EXIT:
        return f"{what} killed by signal {rc - SIGNAL_EXIT} (exit {rc})"
    return f"{what} exited {rc}"


async def run_recovery_script(rec: Recovery, api_url: str, on_start=lambda proc: None) -> RecoveryReport:
    """Run one recovery script to the end and say how it went."""
    out_path, err_path = stdio_paths(
        rec.output_dir, "recovery", rec.workflow_id, rec.job_id, rec.run_id, rec.attempt_id
    )
    env = unmarked(dict(os.environ)) | job_vars(
        workflow_id=rec.workflow_id,
        job_id=rec.job_id,
        name=rec.name,
        run_id=rec.run_id,
        attempt_id=rec.attempt_id,
        api_url=api_url,
        output_dir=rec.output_dir,
        extra=rec.env,
    )
    env["TORC_RETURN_CODE"] = str(rec.return_code)
    started = time.monotonic()

    def report(ok: bool, rc: int | None, message: str) -> RecoveryReport:
        return RecoveryReport(
            rec.job_id, rec.run_id, rec.attempt_id, ok, rc, message, round(time.monotonic() - started, 6)
        )

    try:
        proc = spawn_logged(
            rec.script,
            cwd=rec.cwd,
            env=env,
            out_path=out_path,
            err_path=err_path,
            checked={"recovery script": rec.script, "output directory": rec.output_dir},
            user_env=rec.env,
        )
    except (OSError, ValueError) as e:  # the job fails with the reason; never left `recovering`
        return report(False, None, f"recovery script {start_failure(e)}")
    on_start(proc)
    try:
        status = await asyncio.wait_for(proc.wait(), rec.timeout)
        assert status is not None  # our own child, reaped: how it ended is known
        rc = signal_return_code(status)
    except TimeoutError:
        await stop_group(proc, 5.0)
        return report(
            False,
            signal_return_code(proc.returncode or -signal.SIGKILL),
            f"recovery script timed out after {rec.timeout:g}s",
        )
    if rc == 0:
        return report(True, 0, f"recovery script succeeded; retrying as attempt {rec.attempt_id + 1}")
    return report(False, rc, describe_exit(rec.script, rc))
