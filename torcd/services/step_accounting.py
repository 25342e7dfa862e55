"""What a finished srun step used, from Slurm's accounting (`sacct`), for the attempt's record.

A step's figures reach the accounting database a moment after it ends, so sacct is asked a few
times over about four seconds, and never past SECONDS in all. On a cluster without accounting
(no slurmdbd) sacct says so once, and steps are then recorded without figures."""

from __future__ import annotations

import asyncio

import structlog

from torcd.core.srun import NO_ACCOUNTING, SACCT_FIELDS, StepUsage, step_usage

log = structlog.get_logger("torcd.steps")

WAITS = (0.2, 0.4, 0.8, 1.2, 1.6)  # seconds before each ask
SECONDS = 8.0  # the most a step's end waits for its figures, slow answers included


class StepAccounting:
    def __init__(self, sacct: str = "sacct"):
        self.sacct = sacct
        self.available = True  # until sacct says the cluster keeps no accounting

    async def usage(self, slurm_job_id: str, name: str) -> StepUsage | None:
        if not self.available:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SECONDS
        for wait in WAITS:
            await asyncio.sleep(wait)
            try:
                out = await self._steps(slurm_job_id, max(0.5, deadline - loop.time()))
            except OSError as e:
                self._give_up(f"{self.sacct}: {e.strerror or e}")
                return None
            if out is None:
                return None
            if (found := step_usage(out, name)) is not None:
                return found
            if loop.time() >= deadline:
                break
        log.info("step_usage_not_found", slurm_job_id=slurm_job_id, step=name)
        return None

    async def _steps(self, slurm_job_id: str, timeout: float) -> str | None:
        proc = await asyncio.create_subprocess_exec(
            self.sacct,
            "-j",
            slurm_job_id,
            "-n",
            "-P",
            "-o",
            SACCT_FIELDS,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("sacct_timed_out", slurm_job_id=slurm_job_id)
            return None
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip()
            if NO_ACCOUNTING in text.lower():
                self._give_up(text)
            else:
                log.warning("sacct_failed", slurm_job_id=slurm_job_id, rc=proc.returncode, error=text[:500])
            return None
        return out.decode(errors="replace")

    def _give_up(self, why: str) -> None:
        self.available = False
        log.info("no_step_accounting", why=why[:500])
