"""Messages shared by the daemon and its clients: RPC params/results and events.

Kept free of heavy imports: the client loads it on every command.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

from torcd.core.attempts import Recovery, Runnable  # handed to workers
from torcd.core.exits import MAX_SQL_INT, Cause, Exit, Id, WorkerTime  # noqa: F401
from torcd.core.graph import GraphEdge, GraphNode
from torcd.core.limits import Adjustment
from torcd.core.retry import Step
from torcd.core.spawning import MAX_SPAWN_JOBS, SpawnJob
from torcd.events import IDLE_EVENTS, Event  # noqa: F401  (the event log's messages, for clients)

SqlInt = Annotated[int, Meta(ge=-MAX_SQL_INT - 1, le=MAX_SQL_INT)]
Count = Annotated[int, Meta(ge=0, le=MAX_SQL_INT)]
Pid = Annotated[int, Meta(ge=1, le=2**31 - 1)]  # pid_t
# A value that ends up in a batch script line or a log line: no newline or other control character.
OneLine = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f-\x9f]*\Z", max_length=4096)]
SlurmAccount = Annotated[str, Meta(pattern=r"^[^\s\x00-\x1f\x7f-\x9f]+\Z", max_length=256)]
Source = Literal["cli", "mcp", "api", "dashboard"]
SpecFormat = Literal["yaml", "json", "json5", "kdl"]
MAX_SPEC_BYTES = 64 * 1024 * 1024  # of a spec's text, in workflows.create and workflows.add_jobs
MAX_USER_DATA_BYTES = 1 << 20  # of one user data value, as JSON: data for jobs to hand on, not a file store
MAX_USER_DATA_ENTRIES = 100_000  # per workflow: declared in the spec, or added with user_data.set
SPEC_FORMATS: tuple[str, ...] = get_args(SpecFormat)


# Each subclass repeats `frozen=True`: msgspec would inherit it, but type checkers do not know that.
class Params(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class NoParams(Params, frozen=True):
    pass


class Shutdown(Params, frozen=True):
    if_idle: bool = False  # only when no workflow is active and no other client is attached
    ignore_workflow: Id | None = None  # ...besides this one (a `torcctl run` being interrupted)


class CreateWorkflow(Params, frozen=True):
    spec_text: Annotated[str, Meta(max_length=MAX_SPEC_BYTES)]
    spec_path: OneLine = "<spec>"
    spec_format: SpecFormat | None = None  # default: from spec_path's extension
    cwd: OneLine = "."
    executor: Literal["local", "slurm"] = "local"
    account: SlurmAccount | None = None


class AddJobs(Params, frozen=True):
    """Jobs added to a workflow that exists: `spec_text` is a spec (its name is ignored) whose jobs,
    with the failure handlers, resource requirements and schedulers they name, join the workflow."""

    workflow_id: Id
    spec_text: Annotated[str, Meta(max_length=MAX_SPEC_BYTES)]
    spec_path: OneLine = "<jobs>"  # names the text in errors (file:line)
    spec_format: SpecFormat | None = None  # default: from spec_path's extension
    # new job's name -> the ids of jobs already in the workflow that it waits for
    depends_on_ids: dict[Annotated[str, Meta(max_length=512)], list[Id]] = {}


class AddedJobs(msgspec.Struct):
    job_ids: dict[str, int]  # each added job's id, by name


class SpawnJobs(Params, frozen=True):
    """Jobs a running job adds to its own workflow (Torc's spawn_jobs), each waiting for it; no
    jobs: its lineage has converged, and `state` is the lineage's final record."""

    job_id: Id  # the running job that adds them
    lineage: Annotated[str, Meta(min_length=1, max_length=200)]
    jobs: Annotated[list[SpawnJob], Meta(max_length=MAX_SPAWN_JOBS)] = []
    state: Any = None  # any JSON value, kept as the lineage's record for this iteration


class Spawned(msgspec.Struct):
    job_ids: dict[str, int]  # each added job's id, by name
    iteration: int  # the lineage's iterations so far, this call's included
    replayed: bool = False  # every job was there already, from the same lineage: nothing was done


class LineageRef(Params, frozen=True):
    workflow_id: Id
    lineage: Annotated[str, Meta(min_length=1, max_length=200)]


class LineageInfo(msgspec.Struct):
    lineage: str
    iterations: int  # calls that added jobs (0: none yet, as on the seed orchestrator)
    max_iterations: int
    state: Any  # the state given with the last of those calls
    converged: bool  # a call added nothing
    final: Any  # the state given then


class SetAutoSchedule(Params, frozen=True):
    workflow_id: Id
    enabled: bool = True
    threshold: Annotated[int, Meta(ge=1, le=MAX_SQL_INT)] = 5
    cooldown: Annotated[float, Meta(ge=0)] = 1800.0
    stranded_timeout: Annotated[float, Meta(ge=0)] = 7200.0


class SubmitAllocations(Params, frozen=True):
    workflow_id: Id
    count: Annotated[int, Meta(ge=1, le=1000)] | None = None  # per scheduler; None: as the ready jobs need
    scheduler: Annotated[str, Meta(min_length=1, max_length=512)] | None = None  # None: each of the workflow's


class RegisterWorker(Params, frozen=True):
    workflow_id: Id
    host: Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f-\x9f]+\Z", max_length=255)]
    cpus: Annotated[int, Meta(ge=1, le=100_000)]
    allocation_id: Id | None = None
    memory: Annotated[int, Meta(ge=0, le=1 << 60)] | None = None  # bytes its jobs may use together
    gpus: Annotated[int, Meta(ge=0, le=1024)] = 0
    resume: Id | None = None  # the worker (of this allocation) whose journal this one took over


ExitReport = Exit  # what a worker reports of an attempt's end: the one exit value


class RecoveryReport(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    job_id: Id
    run_id: Id
    attempt_id: Id
    ok: bool
    return_code: SqlInt | None
    message: str
    seconds: Annotated[float, Meta(ge=0, le=1e9)] | None = None  # how long the script ran


class StartedReport(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    job_id: Id
    run_id: Id
    attempt_id: Id
    pid: Pid


class WorkerPoll(Params, frozen=True):
    """One round trip of a worker: what happened since the last poll, and what it can take."""

    worker_id: Id
    free_cpus: Annotated[int, Meta(ge=0, le=100_000)] = 0
    free_memory: Annotated[int, Meta(ge=0, le=1 << 60)] | None = None  # bytes; None: not counted
    free_gpus: Annotated[int, Meta(ge=0, le=1024)] | None = None  # None: this worker assigns no GPUs
    time_left: Annotated[float, Meta(ge=0, le=1e9)] | None = None  # seconds of walltime it can still use
    abandon: bool = False  # its running jobs are a dead worker's that it cannot watch: record them lost
    claim: bool = True
    started: list[StartedReport] = []
    exits: list[ExitReport] = []
    recoveries: list[RecoveryReport] = []


class WorkerFinish(Params, frozen=True):
    worker_id: Id
    reason: str = "done"


class WorkflowRef(Params, frozen=True):
    workflow_id: Id


class ResetStatus(Params, frozen=True):
    workflow_id: Id
    failed_only: bool = False


class Reinitialize(Params, frozen=True):
    workflow_id: Id
    dry_run: bool = False


class Recover(Params, frozen=True):
    workflow_id: Id
    memory_multiplier: Annotated[float, Meta(ge=1, le=1000)] = 1.5
    runtime_multiplier: Annotated[float, Meta(ge=1, le=1000)] = 1.4
    retry_unknown: bool = False
    dry_run: bool = False
    source: Source = "cli"
    reason: Annotated[str, Meta(max_length=4096)] = ""  # why, kept with each change


class UpdateResources(Params, frozen=True):
    """New limits for one job's next attempts (Torc's update_job_resources); at least one."""

    job_id: Id
    reason: Annotated[str, Meta(min_length=1, max_length=4096)]  # why, kept with each change
    memory: Annotated[str, Meta(max_length=64)] | None = None  # 8g, 512m, 1.5g
    runtime: Annotated[str, Meta(max_length=64)] | None = None  # ISO-8601: PT2H
    num_cpus: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    source: Source = "cli"


class RecoverResult(msgspec.Struct):
    adjustments: list[Adjustment]
    reset: int  # jobs put back to run (the retried ones and what they block); 0 in a dry run
    dry_run: bool = False


class Results(Params, frozen=True):
    workflow_id: Id
    all_runs: bool = False
    failed: bool = False
    return_code: SqlInt | None = None
    limit: Annotated[int, Meta(ge=1, le=1_000_000)] = 100_000
    after_job_id: Count = 0  # only jobs after this one: the next page (a page never splits a job)


class ListFiles(Params, frozen=True):
    workflow_id: Id
    limit: Annotated[int, Meta(ge=1, le=1_000_000)] = 100_000


class FileInfo(msgspec.Struct):
    name: str
    path: str  # relative to the workflow's directory, as written
    producer: str | None  # the job that writes it; None: an input that must exist
    consumers: list[str]  # the jobs that read it
    exists: bool


class DatasetInfo(msgspec.Struct):
    name: str
    path: str  # relative to the workflow's directory, as written
    hash_mode: str  # manifest | content | none
    description: str
    writers: list[str]  # the jobs that write into it
    readers: list[str]  # the jobs that read it (each after every writer)
    exists: bool


class UserDataRef(Params, frozen=True):
    workflow_id: Id
    name: OneLine


class SetUserData(Params, frozen=True):
    workflow_id: Id
    name: Annotated[str, Meta(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f-\x9f]+\Z")]
    data: Any = None  # any JSON value, 1 MiB at most


class ListUserData(Params, frozen=True):
    workflow_id: Id
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 1000  # entries (each up to 1 MiB)


class UserDataInfo(msgspec.Struct):
    name: str
    data: Any
    is_ephemeral: bool
    producer: str | None  # the job that writes it
    updated: float


JobSort = Literal["id", "name", "status", "attempt_id", "updated", "template"]
JobName = Annotated[str, Meta(max_length=512)]


class CountJobs(Params, frozen=True):
    """Which of a workflow's jobs: in a status, whose name holds `name` (a literal substring,
    case-insensitive for ASCII), made from `template`."""

    workflow_id: Id
    status: str | None = None
    name: JobName | None = None
    template: JobName | None = None
    label: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    labelled: bool | None = None  # true: with a label (any); false: without


class ListJobs(CountJobs, frozen=True):
    limit: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000
    offset: Count = 0
    sort: JobSort = "id"  # ties are broken by id
    descending: bool = False


class JobCount(msgspec.Struct):
    count: int


class WorkflowGraph(Params, frozen=True):
    workflow_id: Id
    max_nodes: Annotated[int, Meta(ge=1, le=5000)] = 300


class Graph(msgspec.Struct):
    grouping: Literal["job", "template"]
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class WorkerInfo(msgspec.Struct):
    id: int
    allocation_id: int | None
    host: str
    cpus: int
    state: str
    registered: float
    last_heartbeat: float
    ended: float | None
    reason: str | None
    running: int  # jobs running on it now


class ActionInfo(msgspec.Struct):
    """A workflow action (Torc's `actions`) and where it stands: armed, running, done or failed,
    with the run it last fired in and what its last firing said."""

    id: int
    index: int  # in the spec's `actions`
    trigger: str
    action_type: str
    commands: list[str]
    persistent: bool
    state: str
    run_id: int | None
    message: str | None


class ExplainJob(Params, frozen=True):
    job_id: Id
    exit_codes: Annotated[list[SqlInt], Meta(max_length=100)] | None = None  # default: its attempts' this run


class Explanation(msgspec.Struct):
    job_id: int
    job_name: str
    failure_handler: str | None
    use_pending_failed: bool | None
    exit_codes: list[int]
    steps: list[Step]
    final_status: str


class JobRef(Params, frozen=True):
    job_id: Id


class Classify(Params, frozen=True):
    job_ids: Annotated[list[Id], Meta(min_length=1, max_length=100_000)]
    reason: str = ""
    source: Source = "cli"


class Classification(msgspec.Struct, forbid_unknown_fields=True):
    job_id: Id
    action: Literal["retry", "fail"]
    reason: Annotated[str, Meta(min_length=1)]


class ClassifyMany(Params, frozen=True):
    """Several pending_failed jobs of one workflow, each with its own action and reason; one
    transaction: all are applied or none."""

    workflow_id: Id
    classifications: Annotated[list[Classification], Meta(min_length=1, max_length=100_000)]
    source: Source = "api"


class ListEvents(Params, frozen=True):
    workflow_id: Id
    after: Count = 0
    limit: Annotated[int, Meta(ge=1, le=100_000)] = 10_000
    last: Annotated[int, Meta(ge=1, le=100_000)] | None = None  # only the latest N (after `after`), in order


class WorkerPollResult(msgspec.Struct):
    jobs: list[Runnable] = []
    recoveries: list[Recovery] = []
    waiting: int = 0  # this worker's jobs still awaiting a decision or a recovery
    stop: bool = False
    api_url: str = ""
    may_come: int = 1  # 1: jobs may still become ready for this worker; 0: it may leave when idle


class WorkflowSummary(msgspec.Struct):
    id: int
    name: str
    state: str  # active | awaiting_classification | done | canceled
    run_id: int
    created: float
    cwd: str
    output_dir: str
    description: str = ""
    counts: dict[str, int] = {}
    executor: str = "local"  # local | slurm
    user: str | None = None
    project: str | None = None
    metadata: dict | None = None
    last_event: float | None = None  # when its latest event happened (for a finished workflow: its end)


class JobInfo(msgspec.Struct, omit_defaults=True):
    id: int
    workflow_id: int
    name: str
    command: str
    status: str
    attempt_id: int
    run_id: int
    num_cpus: int
    failure_handler: str | None = None
    num_gpus: int = 0
    memory_bytes: int | None = None
    runtime_seconds: float | None = None
    reason: str | None = None
    return_code: int | None = None
    template: str = ""  # the name template it was made from
    depends_on: list[int] = []
    stderr_path: str | None = None
    stderr_tail: str | None = None
    lineage: str | None = None  # added by a job of this lineage (jobs.spawn); None: declared
    scheduler: str | None = None  # its Slurm scheduler


class AttemptInfo(msgspec.Struct, omit_defaults=True):
    job_id: int
    run_id: int
    attempt_id: int
    start_time: float
    end_time: float | None = None
    pid: int | None = None
    host: str | None = None
    return_code: int | None = None
    rule_index: int | None = None
    action: str | None = None
    recovery_outcome: str | None = None
    message: str | None = None
    cause: str | None = None  # timeout, oom, missing_output: why it failed, beyond its exit code
    gpus: str | None = None  # the devices it ran on
    runtime_limit: float | None = None  # seconds it was allowed
    memory_limit: int | None = None  # bytes it was allowed
    peak_memory: int | None = None  # bytes its processes used together, at most
    cpu_seconds: float | None = None
    stdout_path: str = ""
    stderr_path: str = ""
    job_name: str | None = None  # in a workflow's results


class ClassifyResult(msgspec.Struct):
    changed: list[int]


class AllocationInfo(msgspec.Struct, omit_defaults=True):
    id: int
    workflow_id: int
    scheduler: str
    state: str  # pending | running | done | failed
    cpus: int
    submitted: float
    slurm_job_id: str | None = None
    slurm_state: str | None = None
    started: float | None = None
    ended: float | None = None
    reason: str | None = None
    script_path: str | None = None


class Ping(msgspec.Struct):
    version: str
    pid: int
    uptime: float
    socket: str
    state_dir: str
    tcp_url: str | None = None
    autostarted: bool = False
    labels_served: list[tuple[int, str]] = []  # (workflow, label) of each `run --label` following now
