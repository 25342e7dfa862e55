"""What a job needs: CPUs, GPUs, nodes, memory and runtime, read from Torc's spec formats.

Memory is a number with an optional unit k, m, g or t (either case, decimals allowed, base
1024: `1.5g`); runtime is an ISO-8601 duration (`PT90S`, `P0DT1M`, `P1DT2H`, `PT1.5H`).
"""

from __future__ import annotations

import re

import msgspec

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
SIGKILL_EXIT = 137


def kernel_oom(return_code: int, peak: int | None, memory_limit: int | None) -> bool:
    """A job killed by SIGKILL (137) after using at least 90 % of its memory limit: the kernel
    (or a cgroup) ran out of memory for it before the monitor's next sample could."""
    return (return_code == SIGKILL_EXIT and peak is not None and memory_limit is not None
            and peak >= NEAR_LIMIT * memory_limit)


class Monitoring(msgspec.Struct, frozen=True):
    """Which jobs are sampled, how often: every job, or (the default) those with a memory
    limit, which the samples enforce."""

    all_jobs: bool = False
    interval: float = 1.0

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
