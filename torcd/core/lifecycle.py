"""The job lifecycle: every change of a job's status is decided here, and only here.

`handle(job, stimulus)` takes the facts about one job and what happened to it, and returns
an `Outcome`: the status change (checked against `status.ALLOWED`; an illegal one raises),
the attempt records to write, the events to publish, and the follow-ups (release the
dependents of a completed job, cancel what a failed job blocks, stop a process). The store
gathers the facts, applies the outcome in one transaction and is the only writer of a job's
status; it never decides one.

A report that no longer applies (an exit for an attempt that was canceled, a recovery result
for a job that moved on) changes nothing: `Outcome.ignored` says why. A person's request
that does not apply (classifying a job that is not pending_failed) raises.

No I/O, no clock: time comes in with the stimulus.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, TypeAlias

import msgspec

from torcd import events as E
from torcd.core.exits import Exit
from torcd.core.retry import AFTER_ACTION, Action, RetryDecision
from torcd.core.status import ACTIVE, FINAL, check_transition
from torcd.core.status import JobStatus as S
from torcd.errors import InvalidTransition


class Job(msgspec.Struct, frozen=True, gc=False):
    """What the lifecycle needs to know about a job. (Values only, none of the small structs here
    can be part of a reference cycle: the garbage collector need not track them.)"""

    id: int
    workflow_id: int
    name: str
    status: S
    run_id: int = 1
    attempt_id: int = 1
    worker_id: int | None = None
    runtime_scale: float = 1.0  # the product of the runtime multipliers applied in this run
    memory_scale: float = 1.0

    def is_current(self, run_id: int, attempt_id: int) -> bool:
        """Does a report about (run, attempt) concern this job's attempt now?"""
        return (self.run_id, self.attempt_id) == (run_id, attempt_id)


# -- stimuli --------------------------------------------------------------


class Stimulus(msgspec.Struct, frozen=True, gc=False):
    time: float


class Claimed(Stimulus, frozen=True):
    """Taken for execution: by the local dispatcher (`pending` until its process starts), or
    by a worker (running at once, in an attempt of that worker's)."""

    worker_id: int | None = None
    host: str | None = None
    stdout_path: str = ""
    stderr_path: str = ""
    runtime_limit: float | None = None
    memory_limit: int | None = None


class Started(Stimulus, frozen=True):
    run_id: int
    attempt_id: int
    host: str
    pid: int | None = None
    stdout_path: str = ""
    stderr_path: str = ""
    gpus: str | None = None  # the devices it was given
    runtime_limit: float | None = None  # the runtime it is allowed
    memory_limit: int | None = None  # the memory it is allowed, bytes


class Requeued(Stimulus, frozen=True):
    """Claimed, but its process never started (a restart, a shutdown): ready again, no attempt spent."""


class Exited(Stimulus, frozen=True):
    """An `Exit` as it reaches the job (`exited`): the stimulus, keyed by time like every other;
    the job it concerns comes with it to `handle`."""

    run_id: int
    attempt_id: int
    return_code: int
    message: str | None = None
    cause: str | None = None  # timeout, oom, missing_output
    peak_memory: int | None = None  # bytes, what the attempt's processes used at most
    cpu_seconds: float | None = None


class Terminated(Stimulus, frozen=True):
    """Stopped because the daemon shut down."""

    run_id: int
    attempt_id: int
    return_code: int
    message: str | None = None


def exited(e: Exit) -> Exited:
    return Exited(e.end_time, e.run_id, e.attempt_id, e.return_code, e.message, e.cause, e.peak_memory, e.cpu_seconds)


def terminated(e: Exit) -> Terminated:
    return Terminated(e.end_time, e.run_id, e.attempt_id, e.return_code, e.message)


class Decided(Stimulus, frozen=True):
    """The failure handler's decision on a recorded non-zero exit."""

    run_id: int
    attempt_id: int
    return_code: int
    decision: RetryDecision


class RecoveryDone(Stimulus, frozen=True):
    run_id: int
    attempt_id: int
    ok: bool
    return_code: int | None
    message: str
    seconds: float | None = None


class Classified(Stimulus, frozen=True):
    action: Literal["retry", "fail"]
    reason: str
    source: str


class Canceled(Stimulus, frozen=True):
    reason: str = "workflow canceled"


class Reset(Stimulus, frozen=True):
    """Run again in run `run_id`; `blocked` when some of its dependencies are not completed."""

    run_id: int
    blocked: bool


class DependenciesMet(Stimulus, frozen=True):
    pass


class UpstreamFailed(Stimulus, frozen=True):
    failed_id: int
    failed_name: str


# -- outcome --------------------------------------------------------------

KEEP = "\0keep"  # a reason left as it is


class StatusChange(msgspec.Struct, frozen=True, gc=False):
    job_id: int
    old: S
    new: S
    attempt_id: int
    run_id: int
    reason: str | None = KEEP
    worker_id: int | None = None  # None: unchanged
    runtime_scale: float | None = None  # None: unchanged
    memory_scale: float | None = None


class AttemptOpened(msgspec.Struct, frozen=True, gc=False):
    job_id: int
    workflow_id: int
    run_id: int
    attempt_id: int
    start_time: float
    host: str | None
    pid: int | None = None
    worker_id: int | None = None
    stdout_path: str = ""
    stderr_path: str = ""
    gpus: str | None = None
    runtime_limit: float | None = None
    memory_limit: int | None = None


class AttemptClosed(msgspec.Struct, frozen=True, gc=False):
    """The write that closes an attempt's row, for an exit or a shutdown (`overwrite_message`)."""

    job_id: int
    run_id: int
    attempt_id: int
    end_time: float
    return_code: int
    message: str | None
    overwrite_message: bool = False  # a shutdown says why it ended; an exit keeps an earlier note
    cause: str | None = None
    peak_memory: int | None = None
    cpu_seconds: float | None = None


class AttemptDecided(msgspec.Struct, frozen=True, gc=False):
    job_id: int
    run_id: int
    attempt_id: int
    rule_index: int | None
    action: str


class RecoveryRecorded(msgspec.Struct, frozen=True, gc=False):
    job_id: int
    run_id: int
    attempt_id: int
    return_code: int | None
    outcome: Literal["succeeded", "failed"]
    seconds: float | None


Record = AttemptOpened | AttemptClosed | AttemptDecided | RecoveryRecorded


class ReleaseDependents(msgspec.Struct, frozen=True, gc=False):
    job_id: int


class CancelDownstream(msgspec.Struct, frozen=True):
    job: Job


class StopProcess(msgspec.Struct, frozen=True, gc=False):
    job_id: int


Instruction = ReleaseDependents | CancelDownstream | StopProcess


class Outcome(msgspec.Struct):
    change: StatusChange | None = None
    records: list[Record] = []
    events: list[E.EventBase] = []
    instructions: list[Instruction] = []
    ignored: str | None = None  # why a report changed nothing


def _change(
    job: Job,
    new: S,
    *,
    attempt_id: int | None = None,
    run_id: int | None = None,
    reason: str | None = KEEP,
    worker_id: int | None = None,
    runtime_scale: float | None = None,
    memory_scale: float | None = None,
) -> StatusChange:
    check_transition(job.status, new, job.id)
    return StatusChange(
        job.id,
        job.status,
        new,
        job.attempt_id if attempt_id is None else attempt_id,
        job.run_id if run_id is None else run_id,
        reason,
        worker_id,
        runtime_scale,
        memory_scale,
    )


# The kinds of event about one job: each carries the job's id and name.
JobEventKind: TypeAlias = (
    type[E.JobReady]
    | type[E.JobStarted]
    | type[E.JobCompleted]
    | type[E.JobExited]
    | type[E.JobFailed]
    | type[E.JobTerminated]
    | type[E.JobClassified]
    | type[E.RetryDecided]
    | type[E.RecoveryFinished]
)


def _event(kind: JobEventKind, job: Job, time: float, **fields: Any) -> E.EventBase:
    return kind(workflow_id=job.workflow_id, time=time, job_id=job.id, job_name=job.name, **fields)


def _stale(job: Job, what: str) -> Outcome:
    return Outcome(
        ignored=f"job {job.id} is {job.status.label} in run {job.run_id} attempt {job.attempt_id}: "
        f"{what} no longer applies"
    )


# -- the transitions --------------------------------------------------------


@functools.singledispatch
def handle(stimulus: Stimulus, job: Job) -> Outcome:
    raise TypeError(f"no transition for {type(stimulus).__name__}")


@handle.register
def _claimed(s: Claimed, job: Job) -> Outcome:
    if s.worker_id is None:  # local: pending until the dispatcher starts its process
        return Outcome(_change(job, S.PENDING))
    change = _change(job, S.RUNNING, worker_id=s.worker_id)
    return Outcome(
        change,
        [
            AttemptOpened(
                job.id,
                job.workflow_id,
                job.run_id,
                job.attempt_id,
                s.time,
                s.host,
                worker_id=s.worker_id,
                stdout_path=s.stdout_path,
                stderr_path=s.stderr_path,
                runtime_limit=s.runtime_limit,
                memory_limit=s.memory_limit,
            )
        ],
        [
            _event(
                E.JobStarted,
                job,
                s.time,
                run_id=job.run_id,
                attempt_id=job.attempt_id,
                message=f"worker {s.worker_id} on {s.host}",
            )
        ],
    )


@handle.register
def _started(s: Started, job: Job) -> Outcome:
    if job.status == S.RUNNING and job.is_current(s.run_id, s.attempt_id):
        return _stale(job, "a second report of its start")  # its attempt is open already
    if job.status != S.PENDING or not job.is_current(s.run_id, s.attempt_id):
        out = _stale(job, "its start")
        out.instructions = [StopProcess(job.id)]  # canceled (or reset) while it was being started
        return out
    return Outcome(
        _change(job, S.RUNNING),
        [
            AttemptOpened(
                job.id,
                job.workflow_id,
                s.run_id,
                s.attempt_id,
                s.time,
                s.host,
                s.pid,
                stdout_path=s.stdout_path,
                stderr_path=s.stderr_path,
                gpus=s.gpus,
                runtime_limit=s.runtime_limit,
                memory_limit=s.memory_limit,
            )
        ],
        [_event(E.JobStarted, job, s.time, run_id=s.run_id, attempt_id=s.attempt_id)],
    )


@handle.register
def _requeued(s: Requeued, job: Job) -> Outcome:
    if job.status != S.PENDING:
        return _stale(job, "putting it back to ready")
    return Outcome(_change(job, S.READY))


@handle.register
def _exited(s: Exited, job: Job) -> Outcome:
    # The attempt is closed whatever became of the job; only the current one moves it on.
    closed = AttemptClosed(
        job.id,
        s.run_id,
        s.attempt_id,
        s.time,
        s.return_code,
        s.message,
        cause=s.cause,
        peak_memory=s.peak_memory,
        cpu_seconds=s.cpu_seconds,
    )
    if job.status != S.RUNNING or not job.is_current(s.run_id, s.attempt_id):
        out = _stale(job, "its exit")
        out.records = [closed]
        return out
    fields = dict(run_id=s.run_id, attempt_id=s.attempt_id, return_code=s.return_code)
    if s.return_code == 0:
        return Outcome(
            _change(job, S.COMPLETED),
            [closed],
            [_event(E.JobCompleted, job, s.time, status="completed", **fields)],
            [ReleaseDependents(job.id)],
        )
    # Still running, its attempt closed: the failure handler decides next (again after a crash).
    return Outcome(None, [closed], [_event(E.JobExited, job, s.time, message=s.message, **fields)])


@handle.register
def _terminated(s: Terminated, job: Job) -> Outcome:
    closed = AttemptClosed(job.id, s.run_id, s.attempt_id, s.time, s.return_code, s.message, overwrite_message=True)
    if job.status != S.RUNNING:
        out = _stale(job, "its termination")
        out.records = [closed]
        return out
    return Outcome(
        _change(job, S.TERMINATED, reason=s.message),
        [closed],
        [
            _event(
                E.JobTerminated,
                job,
                s.time,
                run_id=s.run_id,
                attempt_id=s.attempt_id,
                return_code=s.return_code,
                status="terminated",
                message=s.message,
            )
        ],
    )


@handle.register
def _decided(s: Decided, job: Job) -> Outcome:
    if job.status != S.RUNNING or not job.is_current(s.run_id, s.attempt_id):
        return _stale(job, "a decision on its exit")
    d = s.decision
    new = AFTER_ACTION[d.action]
    again = d.action in (Action.RETRY, Action.RECOVER)  # multipliers grow the next attempt's limits
    change = _change(
        job,
        new,
        attempt_id=s.attempt_id + 1 if d.action == Action.RETRY else s.attempt_id,
        reason=d.reason,
        runtime_scale=job.runtime_scale * d.runtime_multiplier if again and d.runtime_multiplier else None,
        memory_scale=job.memory_scale * d.memory_multiplier if again and d.memory_multiplier else None,
    )
    out = Outcome(
        change,
        [AttemptDecided(job.id, s.run_id, s.attempt_id, d.rule_index, d.action.value)],
        [
            _event(
                E.RetryDecided,
                job,
                s.time,
                run_id=s.run_id,
                attempt_id=s.attempt_id,
                return_code=s.return_code,
                rule_index=d.rule_index,
                action=d.action.value,
                status=new.label,
                message=d.reason,
            )
        ],
    )
    if new == S.FAILED:
        out.instructions = [CancelDownstream(job)]
    return out


@handle.register
def _recovery_done(s: RecoveryDone, job: Job) -> Outcome:
    if job.status != S.RECOVERING or not job.is_current(s.run_id, s.attempt_id):
        return _stale(job, "a recovery result")
    new = AFTER_ACTION[Action.RETRY if s.ok else Action.FAIL]
    out = Outcome(
        _change(job, new, attempt_id=s.attempt_id + 1 if s.ok else s.attempt_id, reason=s.message),
        [RecoveryRecorded(job.id, s.run_id, s.attempt_id, s.return_code, "succeeded" if s.ok else "failed", s.seconds)],
        [
            _event(
                E.RecoveryFinished,
                job,
                s.time,
                run_id=s.run_id,
                attempt_id=s.attempt_id,
                return_code=s.return_code,
                action="retry" if s.ok else "fail",
                status=new.label,
                message=s.message,
            )
        ],
    )
    if new == S.FAILED:
        out.instructions = [CancelDownstream(job)]
    return out


@handle.register
def _classified(s: Classified, job: Job) -> Outcome:
    if job.status != S.PENDING_FAILED:
        raise InvalidTransition(f"job {job.id} is {job.status.label}, not pending_failed")
    new = AFTER_ACTION[Action(s.action)]
    out = Outcome(
        _change(
            job,
            new,
            attempt_id=job.attempt_id + 1 if new == S.READY else job.attempt_id,
            reason=s.reason or f"classified {s.action} ({s.source})",
        ),
        events=[
            _event(
                E.JobClassified,
                job,
                s.time,
                run_id=job.run_id,
                attempt_id=job.attempt_id,
                action=s.action,
                status=new.label,
                message=s.reason,
                source=s.source,
            )
        ],
    )
    if new == S.FAILED:
        out.instructions = [CancelDownstream(job)]
    return out


@handle.register
def _canceled(s: Canceled, job: Job) -> Outcome:
    if job.status in FINAL:
        return _stale(job, "canceling it")
    out = Outcome(_change(job, S.CANCELED, reason=s.reason))
    if job.status in (S.RUNNING, S.RECOVERING, S.PENDING):
        out.instructions = [StopProcess(job.id)]
    return out


@handle.register
def _reset(s: Reset, job: Job) -> Outcome:
    if job.status in ACTIVE:
        return _stale(job, "a reset")
    new = S.BLOCKED if s.blocked else S.READY
    if job.status == new:  # blocked and still blocked: a new run, no status change
        return Outcome(StatusChange(job.id, new, new, 1, s.run_id, None, runtime_scale=1.0, memory_scale=1.0))
    return Outcome(_change(job, new, attempt_id=1, run_id=s.run_id, reason=None, runtime_scale=1.0, memory_scale=1.0))


@handle.register
def _dependencies_met(s: DependenciesMet, job: Job) -> Outcome:
    if job.status != S.BLOCKED:
        return _stale(job, "its dependencies completing")
    return Outcome(_change(job, S.READY), events=[_event(E.JobReady, job, s.time)])


@handle.register
def _upstream_failed(s: UpstreamFailed, job: Job) -> Outcome:
    if job.status not in (S.BLOCKED, S.UNINITIALIZED):
        return _stale(job, "canceling it for a failed dependency")
    return Outcome(_change(job, S.CANCELED, reason=f"upstream job {s.failed_name} ({s.failed_id}) failed"))


def cascade_summary(failed: Job, canceled: int, time: float) -> E.EventBase:
    """The event of a failed job, once what it blocked has been canceled."""
    return _event(
        E.JobFailed,
        failed,
        time,
        status="failed",
        count=canceled,
        message=f"{canceled} downstream jobs canceled" if canceled else None,
    )
