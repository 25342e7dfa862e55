"""The event log's events: one class per kind, a tagged union on `kind`.

Subscribers dispatch on the class (`isinstance(e, JobExited)`), never on a string. Each kind
carries its own fields after the common three (workflow_id, time, seq); asked for a field
another kind has, it answers None, so readers that go across kinds need no case for each.
The JSON written to the log and streamed on /events is what it always was:
`{"kind": "job_started", "workflow_id": 1, ...}` — the fields keep the order they had in the
one field list all kinds once shared, and a field named for what it holds (`allocation_id`,
`worker_id`, `job_count`) keeps its old key (`count`) on the wire. Kept free of heavy imports:
the client loads it on every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias, Union, cast

import msgspec


class EventBase(msgspec.Struct, omit_defaults=True, tag_field="kind", gc=False):
    workflow_id: int
    time: float
    seq: int = 0

    @property
    def kind(self) -> str:
        return tag_of(type(self))

    def __getattr__(self, name: str) -> None:
        # Readers that go across kinds (a filter on job_name, `torcctl events`) may ask any kind
        # for a field another kind has: one this kind lacks reads as absent (None).
        if name not in ANY_KIND_FIELDS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def tag_of(kind: type[EventBase]) -> str:
    """The kind's name on the wire (its tag)."""
    return cast(str, kind.__struct_config__.tag)  # every kind is declared with tag="..."


def _count():
    """A number stored under the wire key `count` (what it counts differs by kind)."""
    return msgspec.field(default=None, name="count")


# Workflows
class WorkflowCreated(EventBase, tag="workflow_created"):
    message: str | None = None  # the workflow's name
    job_count: int | None = _count()


class JobsAdded(EventBase, tag="jobs_added"):  # to a workflow that exists (workflows.add_jobs)
    message: str | None = None  # how the new jobs start: ready, blocked, canceled
    job_count: int | None = _count()


class WorkflowReset(EventBase, tag="workflow_reset"):
    run_id: int | None = None
    message: str | None = None
    job_count: int | None = _count()


class WorkflowCanceled(EventBase, tag="workflow_canceled"):
    job_count: int | None = _count()


class WorkflowDone(EventBase, tag="workflow_done"):
    status: str | None = None
    message: str | None = None


class WorkflowAwaitingClassification(EventBase, tag="workflow_awaiting_classification"):
    status: str | None = None
    message: str | None = None


# Jobs
class JobReady(EventBase, tag="job_ready"):
    job_id: int | None = None
    job_name: str | None = None


class JobStarted(EventBase, tag="job_started"):
    job_id: int | None = None
    job_name: str | None = None
    run_id: int | None = None
    attempt_id: int | None = None
    message: str | None = None


class JobCompleted(EventBase, tag="job_completed"):
    job_id: int | None = None
    job_name: str | None = None
    run_id: int | None = None
    attempt_id: int | None = None
    status: str | None = None
    return_code: int | None = None


class JobExited(EventBase, tag="job_exited"):  # non-zero: awaiting its failure-handler decision
    job_id: int | None = None
    job_name: str | None = None
    run_id: int | None = None
    attempt_id: int | None = None
    return_code: int | None = None
    message: str | None = None


class JobFailed(EventBase, tag="job_failed"):
    job_id: int | None = None
    job_name: str | None = None
    status: str | None = None
    message: str | None = None
    count: int | None = None  # downstream jobs canceled with it


class JobTerminated(EventBase, tag="job_terminated"):
    job_id: int | None = None
    job_name: str | None = None
    run_id: int | None = None
    attempt_id: int | None = None
    status: str | None = None
    return_code: int | None = None
    message: str | None = None


class JobClassified(EventBase, tag="job_classified"):
    job_id: int | None = None
    job_name: str | None = None
    run_id: int | None = None
    attempt_id: int | None = None
    status: str | None = None
    action: str | None = None
    message: str | None = None
    source: str | None = None


class JobResourcesChanged(EventBase, tag="job_resources_changed"):
    job_id: int | None = None
    job_name: str | None = None
    message: str | None = None
    source: str | None = None
    resource: str | None = None  # memory (bytes) or runtime (seconds)
    old_value: float | None = None
    new_value: float | None = None


class RetryDecided(EventBase, tag="retry_decided"):
    job_id: int | None = None
    job_name: str | None = None
    run_id: int | None = None
    attempt_id: int | None = None
    status: str | None = None
    return_code: int | None = None
    rule_index: int | None = None  # the failure handler's rule that decided
    action: str | None = None
    message: str | None = None


class RecoveryFinished(EventBase, tag="recovery_finished"):
    job_id: int | None = None
    job_name: str | None = None
    run_id: int | None = None
    attempt_id: int | None = None
    status: str | None = None
    return_code: int | None = None
    action: str | None = None
    message: str | None = None


# Slurm
class AllocationSubmitted(EventBase, tag="allocation_submitted"):
    message: str | None = None
    allocation_id: int | None = _count()


class AllocationFailed(EventBase, tag="allocation_failed"):
    message: str | None = None
    allocation_id: int | None = _count()


class AllocationStarted(EventBase, tag="allocation_started"):
    status: str | None = None  # the Slurm state seen, when squeue saw it start
    message: str | None = None
    allocation_id: int | None = _count()


class AllocationFinished(EventBase, tag="allocation_finished"):
    status: str | None = None  # Slurm's verdict (COMPLETED, TIMEOUT...), GONE if it left no trace
    message: str | None = None
    allocation_id: int | None = _count()


class AutoScheduleSet(EventBase, tag="auto_schedule_set"):
    action: str | None = None  # on or off
    message: str | None = None


class AutoScheduleDecided(EventBase, tag="auto_schedule_decided"):
    rule_index: int | None = None  # the auto-schedule rule that submitted
    action: str | None = None  # submit or wait
    message: str | None = None


class WorkerRegistered(EventBase, tag="worker_registered"):
    message: str | None = None
    worker_id: int | None = _count()


class WorkerFinished(EventBase, tag="worker_finished"):
    message: str | None = None
    worker_id: int | None = _count()


class WorkerLost(EventBase, tag="worker_lost"):
    message: str | None = None
    worker_id: int | None = _count()


class ActionStarted(EventBase, tag="action_started"):
    run_id: int | None = None
    rule_index: int | None = None  # the action's index in the spec (its wire key, kept)
    action: str | None = None
    message: str | None = None


class ActionFinished(EventBase, tag="action_finished"):
    run_id: int | None = None
    status: str | None = None
    return_code: int | None = None
    rule_index: int | None = None  # the action's index in the spec
    action: str | None = None
    message: str | None = None


KINDS: tuple[type[EventBase], ...] = tuple(EventBase.__subclasses__())
if TYPE_CHECKING:  # the checker needs the union spelled out; at run time it is built from KINDS
    Event: TypeAlias = (
        WorkflowCreated
        | JobsAdded
        | WorkflowReset
        | WorkflowCanceled
        | WorkflowDone
        | WorkflowAwaitingClassification
        | JobReady
        | JobStarted
        | JobCompleted
        | JobExited
        | JobFailed
        | JobTerminated
        | JobClassified
        | JobResourcesChanged
        | RetryDecided
        | RecoveryFinished
        | AllocationSubmitted
        | AllocationFailed
        | AllocationStarted
        | AllocationFinished
        | AutoScheduleSet
        | AutoScheduleDecided
        | WorkerRegistered
        | WorkerFinished
        | WorkerLost
        | ActionStarted
        | ActionFinished
    )
else:
    Event = Union[KINDS]  # noqa: UP007  (a union of a tuple built at run time: `|` cannot spell it)
ANY_KIND_FIELDS = frozenset(f for k in KINDS for f in k.__struct_fields__)

# After one of these, nothing more runs in the workflow until someone acts.
IDLE = (WorkflowDone, WorkflowAwaitingClassification, WorkflowCanceled)
IDLE_EVENTS = frozenset(tag_of(k) for k in IDLE)
