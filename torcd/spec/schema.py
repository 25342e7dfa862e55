"""What a workflow spec may say (the document's structs, checked by msgspec) and what it
becomes once checked and expanded (`Workflow`, with its `ExpandedJob`s), with the limits on both."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from torcd.core.actions import Action
from torcd.core.resources import ComputeNode, Monitoring
from torcd.core.retry import Rule
from torcd.core.spawning import DEFAULT_MAX_ITERATIONS, Spawning
from torcd.spec.actions import ActionSpec
from torcd.spec.data import Dataset, DatasetSpec, File, FileSpec, Pattern, UserData, UserDataSpec
from torcd.spec.execution import Execution, ExecutionConfigSpec, StdioSpec
from torcd.spec.slurm import SlurmDefaults, SlurmSchedulerSpec

MAX_JOBS = 2_000_000
MAX_NAME = 512  # characters of a job name, after parameters are filled in
# execve takes at most 128 KiB (MAX_ARG_STRLEN) in one argument; a job's command is one
# argument of `bash -c`, after torcd's prefix that records its exit status.
MAX_ARG_BYTES = 128 * 1024 - 1
MAX_COMMAND_BYTES = 120 * 1024
MAX_EXPANDED_BYTES = 128 * 1024 * 1024  # names, commands, dependencies and env of all jobs
MAX_DEPENDENCIES = 4_000_000  # two per job at the job limit
Name = Annotated[str, Meta(min_length=1, max_length=512)]
ParamValue = str | int | float | list[str | int | float]


class FailureHandlerSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    rules: Annotated[list[Rule], Meta(min_length=1)]


class ResourceRequirementSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    num_cpus: Annotated[int, Meta(ge=1, le=100_000)] = 1
    num_gpus: Annotated[int, Meta(ge=0, le=1024)] = 0
    num_nodes: Annotated[int, Meta(ge=1, le=10_000)] = 1
    memory: str | int | None = None  # 20g, 512m, 1.5g; a bare number is bytes
    runtime: str | None = None  # ISO-8601: PT1H, P0DT1M, PT90S


class JobSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    command: Annotated[str, Meta(min_length=1)]
    depends_on: list[Name] | None = []  # null: none (Torc writes it so)
    failure_handler: Name | None = None
    parameters: dict[str, ParamValue] = {}
    use_parameters: list[str] | None = None
    num_cpus: Annotated[int, Meta(ge=1, le=4096)] | UnsetType = UNSET  # unset: from its requirement
    env: dict[str, str] = {}
    scheduler: Name | None = None
    resource_requirements: Name | None = None
    invocation_script: str | None = None  # put before the command (Torc's), like `bash wrap.sh`
    cancel_on_blocking_job_failure: bool = True  # false: run even when a dependency failed (Airflow's all_done)
    parameter_mode: Literal["product", "zip"] = "product"
    depends_on_regexes: list[Pattern] = []
    supports_termination: bool = True  # false: KILL at its runtime limit, no TERM and grace
    input_files: list[Name] = []
    output_files: list[Name] = []
    input_file_regexes: list[Pattern] = []
    output_file_regexes: list[Pattern] = []
    input_user_data: list[Name] = []
    output_user_data: list[Name] = []
    input_user_data_regexes: list[Pattern] = []
    output_user_data_regexes: list[Pattern] = []
    priority: Annotated[int, Meta(ge=0, le=2**31 - 1)] = 0  # Torc's: higher is claimed first when several are ready
    label: Annotated[str, Meta(min_length=1, max_length=256)] | None = None  # claimed only by a `run --label` of it
    stdio: StdioSpec | None = None  # Torc's: replaces the workflow's execution_config.stdio whole
    input_datasets: list[Name] = []  # Torc's: it runs after every job that writes these
    output_datasets: list[Name] = []

    def __post_init__(self):
        if self.depends_on is None:
            self.depends_on = []


class MonitorTargetSpec(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    granularity: Literal["summary", "time_series"] = "summary"


class ResourceMonitorSpec(msgspec.Struct, forbid_unknown_fields=True):
    """Torc's `resource_monitor`, flat (`enabled`, `granularity`) or per target (`jobs`, `compute_node`)."""

    enabled: bool | None = None
    granularity: Literal["summary", "time_series"] = "summary"
    sample_interval_seconds: Annotated[float, Meta(ge=0.1, le=3600)] = 1.0
    jobs: MonitorTargetSpec | None = None
    compute_node: MonitorTargetSpec | None = None
    generate_plots: bool = False  # plots into <output_dir>/resource_plots/ when the workflow ends
    metrics: Any = None  # Torc drops it; `validate` says so

    def monitoring(self) -> Monitoring:
        every_job = self.jobs.enabled if self.jobs is not None else self.enabled is not False
        return Monitoring(every_job, self.sample_interval_seconds, self.generate_plots)


class DynamicJobsSpec(msgspec.Struct, forbid_unknown_fields=True):
    """Torc's `dynamic_jobs`: how many times each lineage of orchestrator jobs may add jobs."""

    max_iterations: Annotated[int, Meta(ge=1, le=1_000_000)] = DEFAULT_MAX_ITERATIONS


class WorkflowDoc(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    jobs: Annotated[list[JobSpec], Meta(min_length=1)]
    description: str = ""
    user: Annotated[str, Meta(max_length=256)] | None = None  # stored and shown; default: who submits it
    project: Annotated[str, Meta(max_length=256)] | None = None
    metadata: dict[str, Any] | str | None = None  # a mapping, or (Torc v0.12.0's form) JSON text of one
    failure_handlers: list[FailureHandlerSpec] = []
    use_pending_failed: bool | None = None
    output_dir: Annotated[str, Meta(min_length=1)] = "output"
    parameters: dict[str, ParamValue] = {}
    variables: dict[str, str | int | float] = {}  # `{name}` in any text; filled in before this is read
    env: dict[str, str] = {}  # every job's, under its own (a job's value wins)
    execution_config: ExecutionConfigSpec | None = None
    dynamic_jobs: DynamicJobsSpec | None = None
    slurm_schedulers: list[SlurmSchedulerSpec] = []
    default_scheduler: Name | None = None
    slurm_defaults: SlurmDefaults = {}
    resource_requirements: list[ResourceRequirementSpec] = []
    resource_monitor: ResourceMonitorSpec | None = None
    files: list[FileSpec] = []
    datasets: list[DatasetSpec] = []
    user_data: list[UserDataSpec] = []
    actions: list[ActionSpec] = []
    # The order ready jobs are claimed in: by id, or largest first (GPUs, then runtime and memory)
    jobs_sort_method: Literal["none", "gpus_runtime_memory", "gpus_memory_runtime"] = "none"
    # Torc's switch for recording provenance as jobs run; here every workflow's is recorded, and
    # `torcctl ro-crate export` writes it for any workflow
    enable_ro_crate: bool = False
    # How workers in allocations behave (Torc's names and defaults).
    compute_node_wait_for_new_jobs_seconds: Annotated[float, Meta(ge=0, le=7 * 86400)] = 90.0
    compute_node_wait_for_healthy_database_minutes: Annotated[float, Meta(ge=0, le=7 * 1440)] = 20.0
    compute_node_expiration_buffer_seconds: Annotated[float, Meta(ge=0, le=86400)] | None = None
    compute_node_min_time_for_new_jobs_seconds: Annotated[float, Meta(ge=0, le=7 * 86400)] = 0.0
    compute_node_ignore_workflow_completion: bool = False

    def compute_node(self) -> ComputeNode:
        return ComputeNode(
            self.compute_node_wait_for_new_jobs_seconds,
            self.compute_node_wait_for_healthy_database_minutes * 60,
            self.compute_node_expiration_buffer_seconds,
            self.compute_node_min_time_for_new_jobs_seconds,
            self.compute_node_ignore_workflow_completion,
        )


class ExpandedJob(msgspec.Struct, array_like=True):
    name: str
    command: str
    depends_on: list[str]
    failure_handler: str | None
    num_cpus: int
    env: dict[str, str]
    scheduler: str | None = None
    num_gpus: int = 0
    memory_bytes: int | None = None
    runtime_seconds: float | None = None
    cancel_on_blocking: bool = True
    inputs: list[str] = []  # names of the files it reads
    outputs: list[str] = []  # ...and writes
    data_inputs: list[str] = []  # names of the user data it reads
    data_outputs: list[str] = []  # ...and writes
    supports_termination: bool = True
    claim_order: int = 0  # its place among the workflow's jobs when several are ready
    template: str = ""  # the name as the spec wrote it, before parameters were filled in
    priority: int = 0  # higher is claimed first (then `jobs_sort_method`, then as written)
    label: str | None = None  # its jobs run only while a `torcctl run --label` of it serves them
    stdio: str | None = None  # Torc's stdio mode (None: separate)
    delete_stdio: bool = False  # its logs are deleted when it completes
    dataset_inputs: list[str] = []  # names of the datasets it reads
    dataset_outputs: list[str] = []  # ...and writes (with other jobs, maybe)


class WorkflowAbout(msgspec.Struct, omit_defaults=True, frozen=True):
    """What a workflow says about itself (Torc's `user`, `project`, `metadata`): stored and shown."""

    user: str | None = None
    project: str | None = None
    metadata: dict[str, Any] | None = None


class Workflow(msgspec.Struct):
    """A spec after validation and parameter expansion: what the store saves."""

    name: str
    description: str
    use_pending_failed: bool | None
    output_dir: str
    failure_handlers: dict[str, list[Rule]]
    jobs: list[ExpandedJob]
    schedulers: list[SlurmSchedulerSpec] = []
    monitoring: Monitoring = Monitoring()
    compute_node: ComputeNode = ComputeNode()
    about: WorkflowAbout = WorkflowAbout()
    slurm_defaults: SlurmDefaults = {}
    files: dict[str, File] = {}
    required_inputs: list[str] = []  # files read that no job writes: they must exist at submission
    user_data: dict[str, UserData] = {}
    actions: list[tuple[Action, list[str]]] = []  # each with the names of the jobs it watches
    execution: Execution = Execution()
    spawning: Spawning = Spawning()  # what the jobs its jobs add (`jobs.spawn`) are read with
    datasets: dict[str, Dataset] = {}
    required_datasets: list[str] = []  # datasets read that no job writes: they must exist at submission
