"""A workflow's execution plan, in the shape of Torc's `get_execution_plan`: events (the start,
then "these jobs complete"), the jobs each one makes ready, and how events follow each other.
Jobs waiting on the same set of jobs become ready at the same event."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

START = "start"


def execution_plan(jobs: Iterable[tuple[str, list[str], str | None]]) -> dict[str, Any]:
    """`jobs`: (name, the names it depends on, its Slurm scheduler or None), in the workflow's order."""
    by_deps: dict[tuple[str, ...], list[str]] = {}
    schedulers: dict[str, str | None] = {}
    for name, depends_on, scheduler in jobs:
        by_deps.setdefault(tuple(sorted(set(depends_on))), []).append(name)
        schedulers[name] = scheduler
    index = {name: i for i, name in enumerate(schedulers)}
    ids: dict[tuple[str, ...], str] = {}
    # numbered by the last job each waits for, in the workflow's order: stable for a given spec
    for n, deps in enumerate(sorted(by_deps, key=lambda d: max((index.get(x, -1) for x in d), default=-1))):
        ids[deps] = START if not deps else f"event_{n}"
    ready_at = {name: ids[deps] for deps, names in by_deps.items() for name in names}
    events: dict[str, dict[str, Any]] = {}
    for deps, names in by_deps.items():
        event_id = ids[deps]
        events[event_id] = {
            "id": event_id,
            "trigger": "WorkflowStart" if not deps else {"JobsComplete": list(deps)},
            "trigger_description": "the workflow starts" if not deps else _describe(deps),
            "jobs_becoming_ready": names,
            "scheduler_allocations": _allocations(names, schedulers),
            "depends_on_events": sorted({ready_at[d] for d in deps if d in ready_at}, key=_order),
            "unlocks_events": [],
        }
    for event in events.values():
        for earlier in event["depends_on_events"]:
            events[earlier]["unlocks_events"].append(event["id"])
    ordered = sorted(events.values(), key=lambda e: _order(e["id"]))
    return {
        "total_events": len(ordered),
        "total_jobs": len(ready_at),
        "root_events": [e["id"] for e in ordered if not e["depends_on_events"]],
        "leaf_events": [e["id"] for e in ordered if not e["unlocks_events"]],
        "events": ordered,
    }


def _describe(deps: tuple[str, ...]) -> str:
    shown = ", ".join(deps[:5]) + (f" and {len(deps) - 5} more" if len(deps) > 5 else "")
    return f"when {shown} complete" + ("s" if len(deps) == 1 else "")


def _allocations(names: list[str], schedulers: dict[str, str | None]) -> list[dict[str, Any]]:
    by_scheduler: dict[str, list[str]] = {}
    for name in names:
        scheduler = schedulers[name]
        if scheduler:
            by_scheduler.setdefault(scheduler, []).append(name)
    return [{"scheduler": s, "scheduler_type": "slurm", "jobs": jobs} for s, jobs in by_scheduler.items()]


def _order(event_id: str) -> int:
    return -1 if event_id == START else int(event_id.removeprefix("event_"))
