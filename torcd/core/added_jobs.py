"""The status a job starts in, and what the status of a job already in the workflow means for a
job added after it that waits for it (`workflows.add_jobs`).

A new job waits for the dependencies that may still complete; the lifecycle releases or
cancels it when they end, through the dependency rows, as for any other job. One that ended
otherwise already has it canceled at once, exactly as the cascade would have done had that
dependency failed after the job was added (`store.lifecycle`'s cascade does it, so that a job
that runs whatever became of its dependencies, `cancel_on_blocking_job_failure: false`, counts
it as ended instead).
"""

from __future__ import annotations

import enum

from torcd.core.status import JobStatus as S


class Upstream(str, enum.Enum):
    MET = "met"  # completed: nothing to wait for
    WAITING = "waiting"  # it may still complete: wait, and let the lifecycle release or cancel
    FAILED = "failed"  # it ended without completing: as if it had failed after the job was added


_MAY_COMPLETE = frozenset({S.UNINITIALIZED, S.BLOCKED, S.READY, S.PENDING, S.RUNNING, S.RECOVERING, S.PENDING_FAILED})


def upstream(status: S) -> Upstream:
    """What a dependency in this status means for a job added now that waits for it."""
    if status == S.COMPLETED:
        return Upstream.MET
    return Upstream.WAITING if status in _MAY_COMPLETE else Upstream.FAILED


def initial_status(waiting: int) -> S:
    """A new job's status: blocked while it waits for some of its dependencies, ready otherwise."""
    return S.BLOCKED if waiting else S.READY
