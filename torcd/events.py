"""The event log's events: one class per kind, a tagged union on `kind`.

Subscribers dispatch on the class (`isinstance(e, JobExited)`), never on a string. Every kind
carries the same optional fields, so the JSON written to the log and streamed on /events is
what it always was: `{"kind": "job_started", "workflow_id": 1, ...}`. Kept free of heavy
imports: the client loads it on every command.
"""

from __future__ import annotations

from typing import Union

import msgspec


class EventBase(msgspec.Struct, omit_defaults=True, tag_field="kind", gc=False):
    workflow_id: int
    time: float
    seq: int = 0
    job_id: int | None = None
    job_name: str | None = None
    run_id: int | None = None
    attempt_id: int | None = None
    status: str | None = None
    return_code: int | None = None
    rule_index: int | None = None
    action: str | None = None
    message: str | None = None
    count: int | None = None
    source: str | None = None
    resource: str | None = None  # memory (bytes) or runtime (seconds), of a job whose limit changed
    old_value: float | None = None
    new_value: float | None = None

    @property
    def kind(self) -> str:
        return type(self).__struct_config__.tag



# Workflows
class WorkflowCreated(EventBase, tag="workflow_created"): pass
class WorkflowReset(EventBase, tag="workflow_reset"): pass
class WorkflowCanceled(EventBase, tag="workflow_canceled"): pass
class WorkflowDone(EventBase, tag="workflow_done"): pass
class WorkflowAwaitingClassification(EventBase, tag="workflow_awaiting_classification"): pass
# Jobs
class JobReady(EventBase, tag="job_ready"): pass
class JobStarted(EventBase, tag="job_started"): pass
class JobCompleted(EventBase, tag="job_completed"): pass
class JobExited(EventBase, tag="job_exited"): pass  # non-zero: awaiting its failure-handler decision
class JobFailed(EventBase, tag="job_failed"): pass
class JobTerminated(EventBase, tag="job_terminated"): pass
class JobClassified(EventBase, tag="job_classified"): pass
class JobResourcesChanged(EventBase, tag="job_resources_changed"): pass
class RetryDecided(EventBase, tag="retry_decided"): pass
class RecoveryFinished(EventBase, tag="recovery_finished"): pass
# Slurm
class AllocationSubmitted(EventBase, tag="allocation_submitted"): pass
class AllocationFailed(EventBase, tag="allocation_failed"): pass
class AllocationStarted(EventBase, tag="allocation_started"): pass
class AllocationFinished(EventBase, tag="allocation_finished"): pass
class AutoScheduleSet(EventBase, tag="auto_schedule_set"): pass
class AutoScheduleDecided(EventBase, tag="auto_schedule_decided"): pass
class WorkerRegistered(EventBase, tag="worker_registered"): pass
class WorkerFinished(EventBase, tag="worker_finished"): pass
class WorkerLost(EventBase, tag="worker_lost"): pass
class ActionStarted(EventBase, tag="action_started"): pass  # rule_index: the action's index in the spec
class ActionFinished(EventBase, tag="action_finished"): pass


KINDS: tuple[type[EventBase], ...] = tuple(EventBase.__subclasses__())
Event = Union[KINDS]  # type: ignore[valid-type]
BY_KIND: dict[str, type[EventBase]] = {k.__struct_config__.tag: k for k in KINDS}

# After one of these, nothing more runs in the workflow until someone acts.
IDLE = (WorkflowDone, WorkflowAwaitingClassification, WorkflowCanceled)
IDLE_EVENTS = frozenset(k.__struct_config__.tag for k in IDLE)
