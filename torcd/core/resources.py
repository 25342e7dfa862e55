"""What a job needs: CPUs, GPUs, nodes, memory and runtime, read from Torc's spec formats.

Memory is a number with an optional unit k, m, g or t (either case, decimals allowed, base
1024: `1.5g`); runtime is an ISO-8601 duration (`PT90S`, `P0DT1M`, `P1DT2H`, `PT1.5H`).
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from torcd.core.exits import SIGKILL_EXIT

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# P[nW][nD][T[nH][nM][nS]]; every number may have a fraction.
_NUM = r"(\d+(?:[.,]\d+)?)"
_DURATION = re.compile(rf"^P(?:{_NUM}W)?(?:{_NUM}D)?(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?$", re.IGNORECASE)
MAX_MEMORY = 1 << 60  # an exabyte: anything above is a typo
MAX_RUNTIME = 10 * 365 * 86400.0  # ten years


class Requirements(msgspec.Struct, frozen=True):
    """A job's requirements; None: no limit."""

    num_cpus: int = 1
    num_gpus: int = 0
    num_nodes: int = 1
    memory_bytes: int | None = None
    runtime_seconds: float | None = None


Resource = Literal["cpus", "memory", "gpus", "runtime"]


class Capacity(msgspec.Struct, frozen=True):
    """What a machine, a worker or a node has (free, or at all); None: not counted."""

    cpus: int | None = None
    memory: int | None = None  # bytes
    gpus: int | None = None
    runtime: float | None = None  # seconds of walltime

    def minus(self, need: Requirements) -> Capacity:
        """What is left once a job that fits has taken its CPUs, memory and GPUs."""

        def left(have: int | None, used: int) -> int | None:
            return None if have is None else have - used

        return Capacity(
            left(self.cpus, need.num_cpus),
            left(self.memory, need.memory_bytes or 0),
            left(self.gpus, need.num_gpus),
            self.runtime,
        )


def shortfalls(need: Requirements, free: Capacity) -> list[Resource]:
    """What the job needs more of than there is, in the order cpus, memory, gpus, runtime; empty:
    it fits. A job without a memory limit needs no memory; one without a runtime fits any walltime.
    The claim queries say the same in SQL (`store.slurm.FITS`, with `fit_bounds`)."""
    out: list[Resource] = []
    if free.cpus is not None and need.num_cpus > free.cpus:
        out.append("cpus")
    if free.memory is not None and (need.memory_bytes or 0) > free.memory:
        out.append("memory")
    if free.gpus is not None and need.num_gpus > free.gpus:
        out.append("gpus")
    if free.runtime is not None and need.runtime_seconds is not None and need.runtime_seconds > free.runtime:
        out.append("runtime")
    return out


def fits(need: Requirements, free: Capacity) -> bool:
    return not shortfalls(need, free)


def fit_bounds(free: Capacity) -> tuple[int | float | None, ...]:
    """`free` as the parameters of the SQL form of `fits`, in its order (cpus are always counted there)."""
    return free.cpus, free.gpus, free.gpus, free.memory, free.memory, free.runtime, free.runtime


def parse_memory(text: str) -> int:
    """Bytes of `20g`, `512M`, `1.5g`, `1024` (bytes); ValueError with a sentence otherwise."""
    m = _MEMORY.match(text)
    if not m:
        raise ValueError(f"memory {text!r} must be a number with an optional unit k, m, g or t, like 20g or 1.5G")
    value = float(m[1]) * _UNITS[m[2].lower()]
    if value < 1 or value > MAX_MEMORY:
        raise ValueError(f"memory {text!r} is out of range (1 byte to 1 exabyte)")
    return int(value)


def parse_duration(text: str) -> float:
    """Seconds of an ISO-8601 duration (`PT1H`, `P0DT1M`, `PT90S`); ValueError with a sentence otherwise."""
    m = _DURATION.match(text.strip())
    if not m or not any(m.groups()) or text.strip().upper().endswith("T"):
        raise ValueError(f"runtime {text!r} must be an ISO-8601 duration like PT1H, PT90S, P0DT1M or P1DT2H")
    weeks, days, hours, minutes, seconds = (float(g.replace(",", ".")) if g else 0.0 for g in m.groups())
    total = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0 or total > MAX_RUNTIME:
        raise ValueError(f"runtime {text!r} is out of range (more than 0 seconds, at most ten years)")
    return total


def gpu_ids(environ: dict[str, str], nvidia_smi_lines: list[str] | None, count: int | None = None) -> list[str]:
    """The GPUs this daemon may hand out: `count` (a `--gpus N` flag), else `TORCD_GPUS=N` (tests,
    or a machine nvidia-smi does not describe), else the daemon's own CUDA_VISIBLE_DEVICES, else
    what `nvidia-smi -L` lists."""
    n = str(count) if count is not None else environ.get("TORCD_GPUS")
    if n is not None:
        if not n.strip().isdigit():
            raise ValueError(f"TORCD_GPUS must be a whole number, got {n!r}")
        return [str(i) for i in range(int(n))]
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i, line in enumerate(line for line in nvidia_smi_lines or [] if line.startswith("GPU "))]


def format_duration(seconds: float) -> str:
    return f"{seconds:g}s" if seconds < 120 else f"{seconds / 60:g}min" if seconds < 7200 else f"{seconds / 3600:g}h"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


NEAR_LIMIT = 0.9  # of its memory limit: a SIGKILL there is taken for the kernel's OOM killer


def kernel_oom(return_code: int, peak: int | None, memory_limit: int | None) -> bool:
    """A job killed by SIGKILL (137) after using at least 90 % of its memory limit: the kernel
    (or a cgroup) ran out of memory for it before the monitor's next sample could."""
    return (
        return_code == SIGKILL_EXIT
        and peak is not None
        and memory_limit is not None
        and peak >= NEAR_LIMIT * memory_limit
    )


class Monitoring(msgspec.Struct, frozen=True):
    """Which jobs are sampled, how often: every job, or (the default) those with a memory
    limit, which the samples enforce; and whether the workflow's end writes resource plots."""

    all_jobs: bool = False
    interval: float = 1.0
    plots: bool = False  # write resource plots into the output directory when the workflow ends

    def interval_for(self, memory_limit: int | None) -> float | None:
        return self.interval if self.all_jobs or memory_limit is not None else None


class ComputeNode(msgspec.Struct, frozen=True):
    """How a workflow's workers in allocations behave (Torc's `compute_node_*` settings)."""

    wait_for_new_jobs: float = 90.0  # seconds idle while jobs may still become ready for it
    wait_for_daemon: float = 1200.0  # seconds a worker keeps trying an unreachable daemon
    expiration_buffer: float | None = None  # seconds before the walltime ends; None: 5 % (30 s to half)
    min_time_for_new_jobs: float = 0.0  # no new jobs with less walltime left than this
    ignore_workflow_completion: bool = False  # wait the full time even when nothing can come

    def buffer(self, walltime: float) -> float:
        if self.expiration_buffer is not None:
            return min(self.expiration_buffer, walltime / 2)
        return min(max(30.0, walltime * 0.05), walltime / 2)
