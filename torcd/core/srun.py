"""Jobs as srun steps (Torc's `execution_config.mode: slurm`): the srun words that start one in
its worker's allocation, and what `sacct` says a finished step used. Pure: the worker runs them."""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from torcd.core.attempts import Runnable, SrunOptions

SRUN_SIGNAL = re.compile(r"(?:R:)?(?:[0-9]{1,2}|(?:SIG)?[A-Z][A-Z0-9]{1,9})(?:@[0-9]{1,5})?")


def step_name(job: Runnable) -> str:
    """The step's Slurm name, by which its accounting is found: Torc's."""
    return f"wf{job.workflow_id}_j{job.job_id}_r{job.run_id}_a{job.attempt_id}"


def srun_words(job: Runnable, options: SrunOptions, slurm_job_id: str, node: str, in_step: bool) -> list[str]:
    """srun and its options for one job on this worker's node of allocation `slurm_job_id`.

    `in_step`: the worker itself runs in a step holding the node's CPUs (a multi-node
    allocation), so the job's step overlaps it; otherwise it takes exactly its own CPUs. The
    step's time is the job's runtime and a minute, so that the worker's own limit (its signal,
    its grace, the `timeout` record) acts first."""
    words = [
        "srun",
        f"--jobid={slurm_job_id}",
        "--nodes=1",
        "--ntasks=1",
        f"--nodelist={node}",
        "--overlap" if in_step else "--exact",
        f"--job-name={step_name(job)}",
        f"--cpus-per-task={job.num_cpus}",
        "--quiet",
    ]
    if not options.cpu_bind:
        words.append("--cpu-bind=none")
    if job.memory:
        words.append(f"--mem={max(1, math.ceil(job.memory / 2**20))}M")
    if job.num_gpus:
        words.append(f"--gpus={job.num_gpus}")
    if job.runtime:
        words.append(f"--time={math.ceil(job.runtime / 60) + 1}")
    if options.signal:
        words.append(f"--signal={options.signal}")
    return words


class StepUsage(msgspec.Struct, frozen=True):
    peak_memory: int | None  # bytes: MaxRSS
    cpu_seconds: float | None  # TotalCPU
    node: str | None = None


# What is asked of sacct (`sacct -j IDS -n -P -o SACCT_FIELDS`), for a step's figures and for
# `slurm sacct`; sacct says NO_ACCOUNTING on a cluster without slurmdbd.
SACCT_FIELDS = "JobID,JobName,State,ExitCode,ElapsedRaw,MaxRSS,TotalCPU,NodeList"
NO_ACCOUNTING = "accounting storage is disabled"
_SIZE = re.compile(r"([0-9.]+)([KMGTP]?)")
_CPU = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")


def sacct_rows(sacct_out: str) -> list[dict[str, Any]]:
    """sacct's lines (SACCT_FIELDS) as rows: the allocation, its step (None for the allocation
    itself), name, state, exit code, elapsed seconds, max RSS bytes, CPU seconds and nodes."""
    rows = []
    for line in sacct_out.splitlines():
        fields = line.split("|")
        if len(fields) != 8:
            continue
        job_id, name, state, exit_code, elapsed, rss, cpu, nodes = fields
        allocation, _, step = job_id.partition(".")
        rows.append(
            {
                "slurm_job_id": allocation,
                "step": step or None,
                "name": name,
                "state": state,
                "exit_code": exit_code,
                "elapsed_seconds": int(elapsed) if elapsed.isdigit() else None,
                "max_rss_bytes": size_bytes(rss) if rss else None,
                "cpu_seconds": duration_seconds(cpu) if cpu else None,
                "nodes": nodes or None,
            }
        )
    return rows


def step_usage(sacct_out: str, name: str) -> StepUsage | None:
    """What sacct says the step `name` used, once it has ended and its figures have reached the
    database (None: not yet, or not there)."""
    for row in sacct_rows(sacct_out):
        if row["name"] != name:
            continue
        if row["state"].split(" ")[0] in ("RUNNING", "PENDING", "") or (
            row["max_rss_bytes"] is None and row["cpu_seconds"] is None
        ):
            return None
        return StepUsage(row["max_rss_bytes"], row["cpu_seconds"], row["nodes"])
    return None


def size_bytes(text: str) -> int | None:
    """sacct's `2048K`, `2.5G` (no suffix: bytes), in bytes; None: not a size."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        return None
    scale = 1024 ** " KMGTP".index(m[2] or " ") if m[2] else 1
    return int(float(m[1]) * scale)


def duration_seconds(text: str) -> float | None:
    """sacct's `MM:SS.mmm`, `HH:MM:SS` or `D-HH:MM:SS`, in seconds; None: not a duration."""
    m = _CPU.fullmatch(text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return round(days * 86_400 + hours * 3_600 + minutes * 60 + seconds, 3)
