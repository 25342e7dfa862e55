"""`torcctl slurm sacct WF` and MCP's `get_slurm_sacct`: what Slurm's accounting says of a
workflow's allocations and of their steps (jobs run as srun steps, and the workers' own), with
the walltime they consumed in all."""

from __future__ import annotations

import subprocess
from typing import Any

from torcd.core.srun import NO_ACCOUNTING, SACCT_FIELDS, sacct_rows


class SacctUnavailable(Exception):
    """sacct is missing, failed, or the cluster keeps no accounting: the message says which."""


def sacct_report(workflow_id: int, slurm_job_ids: list[str], sacct: str = "sacct") -> dict[str, Any]:
    """Each allocation's row and its steps' rows, and the walltime of the allocations in all."""
    rows: list[dict[str, Any]] = []
    if slurm_job_ids:
        try:
            done = subprocess.run(
                [sacct, "-j", ",".join(slurm_job_ids), "-n", "-P", "-o", SACCT_FIELDS],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise SacctUnavailable(f"{sacct} not found: is Slurm installed and on PATH?") from None
        except subprocess.TimeoutExpired:
            raise SacctUnavailable(f"{sacct} did not answer within 60 s") from None
        if done.returncode != 0:
            why = done.stderr.strip() or done.stdout.strip()
            if NO_ACCOUNTING in why.lower():
                raise SacctUnavailable(f"this cluster keeps no job accounting (no slurmdbd): {why}")
            raise SacctUnavailable(f"sacct failed (exit {done.returncode}): {why}")
        rows = sacct_rows(done.stdout)
    total = sum(r["elapsed_seconds"] or 0 for r in rows if r["step"] is None)
    return {
        "workflow_id": workflow_id,
        "rows": rows,
        "total_walltime_seconds": total,
        "summary": f"Total walltime consumed: {_hms(total)} ({total} seconds) by {len(slurm_job_ids)} allocations",
    }


def _hms(seconds: int) -> str:
    return f"{seconds // 3600}h {seconds % 3600 // 60}m {seconds % 60}s"
