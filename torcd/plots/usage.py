"""What each job used against its limits, from its attempts: the rows behind `torcctl reports
check-resource-utilization`, the resource plots and their table of jobs near or over a limit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torcd.protocol import AttemptInfo

OVER = "over its limit"
NEAR = "within 10 % of its limit"
LOW = "used under a fifth of its limit"


def utilization(a: AttemptInfo) -> dict[str, Any]:
    """One attempt's peak memory and runtime against its limits, with a note for each limit it
    went over, came within 10 % of, or used under a fifth of (a limit that could be lower)."""
    runtime = (a.end_time or a.start_time) - a.start_time
    out: dict[str, Any] = {
        "job_id": a.job_id,
        "job_name": a.job_name,
        "attempt_id": a.attempt_id,
        "return_code": a.return_code,
        "cause": a.cause,
        "runtime_seconds": round(runtime, 3),
        "cpu_seconds": a.cpu_seconds,
        "peak_memory": a.peak_memory,
        "memory_limit": a.memory_limit,
        "runtime_limit": a.runtime_limit,
        "notes": [],
    }
    for what, used, limit in (("memory", a.peak_memory, a.memory_limit), ("runtime", runtime, a.runtime_limit)):
        if used is None or not limit:
            continue
        share = used / limit
        out[f"{what}_percent"] = round(100 * share, 1)
        if share > 1 or a.cause == ("oom" if what == "memory" else "timeout"):
            out["notes"].append(f"{what}: {OVER}")
        elif share >= 0.9:
            out["notes"].append(f"{what}: {NEAR}")
        elif share < 0.2 and a.return_code == 0:
            out["notes"].append(f"{what}: {LOW}")
    return out


def last_finished(attempts: Iterable[AttemptInfo], include_failed: bool = True) -> list[AttemptInfo]:
    """Each job's last finished attempt among `attempts` (given in attempt order, as
    `workflows.results` returns those of the current run)."""
    latest: dict[int, AttemptInfo] = {}
    for a in attempts:
        if a.end_time is not None and (include_failed or a.return_code == 0):
            latest[a.job_id] = a
    return list(latest.values())


def near_or_over(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `utilization` rows of jobs that went over a limit or came within 10 % of one."""
    return [r for r in rows if any(n.endswith((OVER, NEAR)) for n in r["notes"])]
