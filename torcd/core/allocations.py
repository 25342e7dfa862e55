"""Slurm allocations and their workers: their statuses, the only transitions between them, and
what each observation does to them.

Everything that changes an allocation's or a worker's status is decided here, from what was
observed (the Slurm queue, a worker registering, finishing or going silent) and the row's facts;
the services and the store gather the observations and apply the decisions. Pure: no I/O. The
status values are the strings stored in the database.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from torcd import events as E
from torcd.core.exits import Cause
from torcd.errors import InvalidTransition


class AllocationStatus(str, enum.Enum):
    PENDING = "pending"  # submitted (or about to be); waiting in the Slurm queue
    RUNNING = "running"
    DONE = "done"  # left the queue: its verdict is the Slurm state last seen
    FAILED = "failed"  # sbatch (or writing its script) failed: it never reached Slurm


class WorkerStatus(str, enum.Enum):
    ACTIVE = "active"
    DONE = "done"  # said it was finished, with nothing running
    LOST = "lost"  # went silent, its allocation ended under it, or it left jobs running


A, W = AllocationStatus, WorkerStatus
OPEN = frozenset({A.PENDING, A.RUNNING})  # an allocation whose credential still registers workers

ALLOWED: dict[AllocationStatus, frozenset[AllocationStatus]] = {
    A.PENDING: frozenset({A.RUNNING, A.DONE, A.FAILED}),
    A.RUNNING: frozenset({A.DONE}),
    A.DONE: frozenset(),
    A.FAILED: frozenset(),
}
WORKER_ALLOWED: dict[WorkerStatus, frozenset[WorkerStatus]] = {
    W.ACTIVE: frozenset({W.DONE, W.LOST}),
    W.DONE: frozenset(),
    W.LOST: frozenset(),
}

# What squeue reports, as an allocation's status; any other state (COMPLETED, FAILED, TIMEOUT...)
# or none at all means it left the queue.
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
GONE = "GONE"  # the Slurm state recorded for an allocation squeue no longer knows
# Slurm's verdict on an allocation that ended, as the cause of the jobs it was running.
SLURM_CAUSES: dict[str, Cause] = {"TIMEOUT": "timeout", "DEADLINE": "timeout", "OUT_OF_MEMORY": "oom"}
SLURM_VERDICTS = {
    "TIMEOUT": "Slurm ended its allocation at the time limit",
    "DEADLINE": "Slurm ended its allocation at its deadline",
    "OUT_OF_MEMORY": "Slurm ended its allocation out of memory",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "Slurm preempted its allocation",
}
RESUME_SILENCE = 5.0  # seconds a worker must have been silent before another takes over its journal


def check_transition(old: AllocationStatus, new: AllocationStatus, allocation_id: int | None = None) -> None:
    if new not in ALLOWED[old]:
        where = f"allocation {allocation_id}: " if allocation_id is not None else ""
        raise InvalidTransition(f"{where}cannot go from {old.value} to {new.value}")


def check_worker_transition(old: WorkerStatus, new: WorkerStatus, worker_id: int | None = None) -> None:
    if new not in WORKER_ALLOWED[old]:
        where = f"worker {worker_id}: " if worker_id is not None else ""
        raise InvalidTransition(f"{where}cannot go from {old.value} to {new.value}")


def is_open(status: str | None) -> bool:
    """Whether an allocation (by its stored status; None: no such row) still takes workers and work."""
    return status in (A.PENDING.value, A.RUNNING.value)


def queue_status(slurm_state: str | None) -> AllocationStatus:
    """The status an allocation has when squeue reports this state (None: not in the queue)."""
    if slurm_state in PENDING_STATES:
        return A.PENDING
    return A.RUNNING if slurm_state in RUNNING_STATES else A.DONE


# -- facts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    id: int
    workflow_id: int
    status: AllocationStatus
    slurm_job_id: str | None = None
    cpus: int = 0
    reason: str | None = None  # why it was submitted
    started: float | None = None


@dataclass(frozen=True)
class Worker:
    id: int
    workflow_id: int
    status: WorkerStatus
    allocation_id: int | None = None
    last_heartbeat: float = 0.0


@dataclass
class Decision:
    """What to write: the new status (None: unchanged) with the columns that go with it, and
    the events to emit. `ignored` says why nothing changes, when that is the answer."""

    status: AllocationStatus | WorkerStatus | None = None
    events: list[E.EventBase] = field(default_factory=list)
    started: float | None = None  # allocation: when it started running (kept once set)
    ended: float | None = None
    slurm_state: str | None = None  # allocation: the Slurm state seen
    reason: str | None = None  # why a worker ended, or why a submission failed
    cause: Cause | None = None  # a lost worker's jobs' exits: their cause (timeout, oom)
    ignored: str | None = None


# -- observations of an allocation -----------------------------------------------


@dataclass(frozen=True)
class Submitted:
    """sbatch accepted it."""

    time: float
    slurm_job_id: str


@dataclass(frozen=True)
class SubmitFailed:
    """Writing its script or sbatch failed."""

    time: float
    error: str


@dataclass(frozen=True)
class QueueSeen:
    """What squeue said of it (None: it is not in the queue any more)."""

    time: float
    slurm_state: str | None


@dataclass(frozen=True)
class WorkerJoined:
    """One of its workers registered: it runs, whatever squeue said last."""

    time: float
    worker_id: int
    host: str


# -- observations of a worker -----------------------------------------------------


@dataclass(frozen=True)
class Registered:
    """A new worker (the row just made)."""

    time: float
    host: str
    cpus: int


@dataclass(frozen=True)
class ResumeAsked:
    """A worker that took over a journal asks to go on under the id written in it."""

    time: float
    workflow_id: int
    allocation_id: int | None
    host: str


@dataclass(frozen=True)
class FinishReported:
    """The worker says it is finished; `jobs_left`: its attempts that never reported an exit."""

    time: float
    reason: str
    jobs_left: int


@dataclass(frozen=True)
class SilenceChecked:
    """The periodic check: how long it has been silent, against the limits, and what became of
    its allocation (`allocation`: its status, None outside one; `verdict`: the Slurm state seen)."""

    time: float
    heartbeat_timeout: float
    poll_interval: float
    daemon_started: float  # workers silent since before this get their workflow's window to return
    wait_for_daemon: float
    allocation: AllocationStatus | None = None
    verdict: str | None = None


@dataclass(frozen=True)
class Closed:
    """Apply a worker's end (decided by FinishReported or SilenceChecked)."""

    time: float
    status: WorkerStatus
    reason: str


@functools.singledispatch
def handle(observation: object, facts: object) -> Decision:
    raise TypeError(f"no decision for {type(observation).__name__}")


def _ignored(why: str) -> Decision:
    return Decision(ignored=why)


@handle.register
def _submitted(s: Submitted, a: Allocation) -> Decision:
    # Still open: a worker may have registered (and started it) before sbatch's answer was recorded.
    if a.status not in OPEN:
        return _ignored(f"allocation {a.id} is {a.status.value}")
    return Decision(
        events=[
            E.AllocationSubmitted(
                workflow_id=a.workflow_id,
                time=s.time,
                allocation_id=a.id,
                message=f"slurm job {s.slurm_job_id}, {a.cpus} cpus: {a.reason}",
            )
        ]
    )


@handle.register
def _submit_failed(s: SubmitFailed, a: Allocation) -> Decision:
    # sbatch can fail after Slurm queued the job (a timeout): a worker that started it already
    # proves it runs, and an allocation that ended is never changed again.
    if a.status != A.PENDING:
        return _ignored(f"allocation {a.id} is {a.status.value}: sbatch's error ({s.error}) came too late")
    check_transition(a.status, A.FAILED, a.id)
    return Decision(
        A.FAILED,
        [E.AllocationFailed(workflow_id=a.workflow_id, time=s.time, allocation_id=a.id, message=s.error)],
        ended=s.time,
        reason=s.error,
    )


@handle.register
def _queue_seen(s: QueueSeen, a: Allocation) -> Decision:
    new = queue_status(s.slurm_state)
    if a.status not in OPEN:
        return _ignored(f"allocation {a.id} is {a.status.value}")
    if new == a.status or (a.status == A.RUNNING and new == A.PENDING):  # a requeue is not a restart
        return _ignored(f"allocation {a.id} stays {a.status.value}")
    check_transition(a.status, new, a.id)
    seen = s.slurm_state or GONE
    kind = E.AllocationStarted if new == A.RUNNING else E.AllocationFinished
    return Decision(
        new,
        [
            kind(
                workflow_id=a.workflow_id,
                time=s.time,
                allocation_id=a.id,
                status=seen,
                message=f"slurm job {a.slurm_job_id}",
            )
        ],
        started=a.started or (s.time if new == A.RUNNING else None),
        ended=s.time if new == A.DONE else None,
        slurm_state=seen,
    )


@handle.register
def _worker_joined(s: WorkerJoined, a: Allocation) -> Decision:
    if a.status != A.PENDING:
        return _ignored(f"allocation {a.id} is {a.status.value}")
    return Decision(
        A.RUNNING,
        [
            E.AllocationStarted(
                workflow_id=a.workflow_id, time=s.time, allocation_id=a.id, message=f"worker {s.worker_id} on {s.host}"
            )
        ],
        started=s.time,
    )


@handle.register
def _registered(s: Registered, w: Worker) -> Decision:
    return Decision(
        events=[
            E.WorkerRegistered(
                workflow_id=w.workflow_id,
                time=s.time,
                worker_id=w.id,
                message=f"{s.host}, {s.cpus} cpus, allocation {w.allocation_id}",
            )
        ]
    )


@handle.register
def _resume_asked(s: ResumeAsked, w: Worker) -> Decision:
    if w.status != W.ACTIVE or (w.workflow_id, w.allocation_id) != (s.workflow_id, s.allocation_id):
        return _ignored(f"worker {w.id} is not an active worker of this allocation")
    if s.time - w.last_heartbeat < RESUME_SILENCE:
        return _ignored(f"worker {w.id} is not silent")  # still alive: the journal's owner goes on
    return Decision(
        events=[
            E.WorkerRegistered(
                workflow_id=w.workflow_id, time=s.time, worker_id=w.id, message=f"{s.host}: resumed from its journal"
            )
        ]
    )


@handle.register
def _finish_reported(s: FinishReported, w: Worker) -> Decision:
    # Whatever its status: jobs it left running are lost with it (closing it again changes nothing).
    if s.jobs_left:
        return Decision(W.LOST, reason=f"finished with jobs running: {s.reason}")
    return Decision(W.DONE, reason=s.reason)


@handle.register
def _silence_checked(s: SilenceChecked, w: Worker) -> Decision:
    if w.status != W.ACTIVE:
        return _ignored(f"worker {w.id} is {w.status.value}")
    silent = s.time - w.last_heartbeat
    if s.allocation == A.DONE and silent > 2 * s.poll_interval:
        verdict = s.verdict or GONE
        why = SLURM_VERDICTS.get(verdict, "its allocation left the Slurm queue")
        return Decision(W.LOST, reason=f"{why} ({verdict})", cause=SLURM_CAUSES.get(verdict))
    if w.last_heartbeat < s.daemon_started and s.time - s.daemon_started < s.wait_for_daemon:
        return _ignored("this daemon was down: the worker keeps trying for that long, so wait for it")
    if silent > s.heartbeat_timeout:
        return Decision(W.LOST, reason=f"no heartbeat for {silent:.0f}s")
    return _ignored(f"worker {w.id} was heard from {silent:.0f}s ago")


@handle.register
def _closed(s: Closed, w: Worker) -> Decision:
    if w.status != W.ACTIVE:
        return _ignored(f"worker {w.id} is {w.status.value}")
    check_worker_transition(w.status, s.status, w.id)
    kind = E.WorkerLost if s.status == W.LOST else E.WorkerFinished
    return Decision(
        s.status,
        [kind(workflow_id=w.workflow_id, time=s.time, worker_id=w.id, message=s.reason)],
        ended=s.time,
        reason=s.reason,
    )
