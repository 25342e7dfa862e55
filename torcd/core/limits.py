"""Recovery by resources (`torcctl recover`): why each failed job failed, and what it gets next.

Pure: the store gathers each failed job's last attempt, `plan` decides, the store applies.
A recorded cause (the monitor's `oom`, the executor's `timeout`) is trusted; without one, the
exit code and how long the attempt ran against its runtime stand in for it.
A pending_failed job (its failure handler had no rule for this failure) is recover's too, as
in Torc's tutorial that combines handlers with `watch --recover`: retrying it is a
classification made by recover, with the diagnosis as its reason.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from torcd.core.exits import SIGKILL_EXIT, SIGXCPU_EXIT
from torcd.core.resources import MAX_MEMORY, MAX_RUNTIME, format_bytes, format_duration

Diagnosis = Literal["oom", "timeout", "unknown"]
Ended = Literal["failed", "pending_failed"]
SLURM_TIMEOUT_EXIT = SIGXCPU_EXIT  # what Slurm's time limit leaves
OOM_BEFORE = 0.8  # a SIGKILL before 80 % of the runtime is taken for memory
TIMEOUT_AFTER = 0.9  # an end after 90 % of the runtime is taken for time


class FailedAttempt(msgspec.Struct, frozen=True):
    """A failed job as recover sees it: its last attempt and its own limits now."""

    job_id: int
    name: str
    return_code: int
    cause: str | None
    wall_seconds: float | None  # how long the attempt ran
    peak_memory: int | None  # bytes, as the monitor saw it
    memory: int | None  # the job's memory limit, bytes
    runtime: float | None  # the job's runtime limit, seconds
    status: Ended = "failed"


class Adjustment(msgspec.Struct, frozen=True, omit_defaults=True):
    """What recover does for one failed job."""

    job_id: int
    name: str
    diagnosis: Diagnosis
    why: str
    retry: bool
    memory: tuple[int | None, int | None] | None = None  # (old, new) when it changes
    runtime: tuple[float | None, float | None] | None = None
    status: Ended = "failed"  # pending_failed: retrying it classifies it


def diagnose(a: FailedAttempt) -> tuple[Diagnosis, str]:
    """oom, timeout or unknown, with the evidence in words."""
    if a.cause == "oom":
        return "oom", "recorded as oom"
    if a.cause == "timeout":
        return "timeout", "recorded as timeout"
    if a.cause is not None:  # a recorded cause that is not about resources: no guessing past it
        return "unknown", f"recorded as {a.cause}"
    share = (a.wall_seconds / a.runtime) if a.wall_seconds is not None and a.runtime else None
    if a.return_code == SLURM_TIMEOUT_EXIT:
        return "timeout", f"exit {SLURM_TIMEOUT_EXIT} (Slurm's time limit)"
    if share is not None and share > TIMEOUT_AFTER:
        return "timeout", f"ran {share:.0%} of its runtime of {format_duration(a.runtime or 0)}"
    if a.return_code == SIGKILL_EXIT and (share is None or share < OOM_BEFORE):
        when = "" if share is None else f" after {share:.0%} of its runtime"
        return "oom", f"killed by SIGKILL ({SIGKILL_EXIT}){when}"
    return "unknown", f"exit {a.return_code}, no resource cause found"


def plan(
    failed: list[FailedAttempt], memory_multiplier: float, runtime_multiplier: float, retry_unknown: bool
) -> list[Adjustment]:
    """For each failed job: raise the limit its failure points at, and say whether it runs again.

    Memory grows from the larger of what it used and what it had; a job out of memory without
    either on record is retried with what it had (there is nothing to multiply). A timed-out job
    with no runtime limit (it ran into someone else's, Slurm's) is retried as it was.
    """
    out = []
    for a in failed:
        diagnosis, why = diagnose(a)
        memory = runtime = None
        if diagnosis == "oom":
            base = max(a.peak_memory or 0, a.memory or 0)
            if base:
                memory = (a.memory, min(MAX_MEMORY, math.ceil(base * memory_multiplier)))
        elif diagnosis == "timeout" and a.runtime is not None:
            runtime = (a.runtime, min(MAX_RUNTIME, a.runtime * runtime_multiplier))
        out.append(
            Adjustment(
                a.job_id, a.name, diagnosis, why, diagnosis != "unknown" or retry_unknown, memory, runtime, a.status
            )
        )
    return out


def reason_for(adj: Adjustment, reason: str = "") -> str:
    """The sentence kept with recover's changes to a job (limits, classification): why, and the caller's reason."""
    return f"recover: {adj.diagnosis}, {adj.why}" + (f"; {reason}" if reason else "")


def describe(adj: Adjustment) -> str:
    """One line for a person: the job, why, and what changes."""
    changes = []
    if adj.memory is not None:
        old, new = adj.memory
        changes.append(f"memory {format_bytes(old) if old else 'unlimited'} -> {format_bytes(new or 0)}")
    if adj.runtime is not None:
        old_s, new_s = adj.runtime
        changes.append(f"runtime {format_duration(old_s or 0)} -> {format_duration(new_s or 0)}")
    verb = (
        ("retry" + (f" with {', '.join(changes)}" if changes else " as it was")) if adj.retry else f"leave {adj.status}"
    )
    parked = ", pending_failed" if adj.status == "pending_failed" else ""
    return f"{adj.name} (job {adj.job_id}{parked}): {adj.diagnosis}, {adj.why}; {verb}"
