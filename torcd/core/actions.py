"""Workflow actions (Torc's `actions`): when each one is due. Pure: counts in, a verdict out."""

from __future__ import annotations

from typing import Literal

import msgspec

Trigger = Literal["on_workflow_start", "on_workflow_complete", "on_jobs_ready", "on_jobs_complete"]
ActionType = Literal["run_commands", "schedule_nodes"]


class Action(msgspec.Struct, frozen=True, omit_defaults=True):
    """An action as stored: what fires it and what it does."""

    index: int  # in the spec's `actions`
    trigger: Trigger
    action_type: ActionType
    commands: list[str] = []
    scheduler: str | None = None
    num_allocations: int = 1
    start_one_worker_per_node: bool = False
    max_parallel_jobs: int | None = None
    persistent: bool = False  # fires again in each run after a reset; otherwise once


class Progress(msgspec.Struct, frozen=True):
    """Where the jobs an action watches stand (for the workflow triggers: all of its jobs)."""

    selected: int  # jobs it watches
    reached_ready: int  # of those, how many became ready (ready, or started since, or ended after)
    finished: int  # of those, how many ended for good (completed, failed, canceled, terminated)


def is_due(trigger: Trigger, progress: Progress) -> bool:
    """Whether an armed action fires now. Jobs triggers fire once all their jobs got there,
    not per job (as Torc does)."""
    if trigger == "on_workflow_start":
        return True
    if trigger in ("on_workflow_complete", "on_jobs_complete"):
        return progress.selected > 0 and progress.finished == progress.selected
    return progress.selected > 0 and progress.reached_ready == progress.selected
