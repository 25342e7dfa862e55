"""Reading workflow specs (YAML or JSON) into validated, expanded jobs.

Errors name the file, the line and the field, and are raised before anything
is stored.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

import msgspec
from ruamel.yaml import YAML
from msgspec import UNSET, Meta, UnsetType

from torcd.core import params as P
from torcd.core.graph import find_cycle
from torcd.core.resources import ComputeNode, Monitoring, Requirements, parse_duration, parse_memory
from torcd.spec.data import (File, FileSpec, JobFiles, Matcher, Pattern, References, UserData, UserDataSpec,
                             expand_files, expand_user_data, job_uses, merged_parameters, producer_edges,
                             substitute_references)
from torcd.core.actions import Action
from torcd.spec.actions import ActionSpec, check_actions, schedule_by_actions
from torcd.spec.slurm import SlurmDefaults, SlurmSchedulerSpec, apply_defaults, check_schedulers
from torcd.core.retry import Rule
from torcd.errors import InvalidParams, SpecError
from torcd.spec.load import Locator, PlainTree, first_content_line, load, metadata_of

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
    generate_plots: bool = False  # accepted; `validate` warns that no plots are written
    metrics: Any = None  # Torc drops it; `validate` says so

    def monitoring(self) -> Monitoring:
        every_job = self.jobs.enabled if self.jobs is not None else self.enabled is not False
        return Monitoring(every_job, self.sample_interval_seconds)


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
    slurm_schedulers: list[SlurmSchedulerSpec] = []
    default_scheduler: Name | None = None
    slurm_defaults: SlurmDefaults = {}
    resource_requirements: list[ResourceRequirementSpec] = []
    resource_monitor: ResourceMonitorSpec | None = None
    files: list[FileSpec] = []
    user_data: list[UserDataSpec] = []
    actions: list[ActionSpec] = []
    # The order ready jobs are claimed in: by id, or largest first (GPUs, then runtime and memory)
    jobs_sort_method: Literal["none", "gpus_runtime_memory", "gpus_memory_runtime"] = "none"
    # How workers in allocations behave (Torc's names and defaults).
    compute_node_wait_for_new_jobs_seconds: Annotated[float, Meta(ge=0, le=7 * 86400)] = 90.0
    compute_node_wait_for_healthy_database_minutes: Annotated[float, Meta(ge=0, le=7 * 1440)] = 20.0
    compute_node_expiration_buffer_seconds: Annotated[float, Meta(ge=0, le=86400)] | None = None
    compute_node_min_time_for_new_jobs_seconds: Annotated[float, Meta(ge=0, le=7 * 86400)] = 0.0
    compute_node_ignore_workflow_completion: bool = False

    def compute_node(self) -> ComputeNode:
        return ComputeNode(self.compute_node_wait_for_new_jobs_seconds,
                           self.compute_node_wait_for_healthy_database_minutes * 60,
                           self.compute_node_expiration_buffer_seconds, self.compute_node_min_time_for_new_jobs_seconds,
                           self.compute_node_ignore_workflow_completion)


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


_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")
_NO_REFERENCES = References(JobFiles([], []), JobFiles([], []))


def parse_spec(text: str, file: str = "<spec>", fmt: str | None = None) -> Workflow:
    """Validate and expand a spec's text; raise SpecError naming file, line and field."""
    return _expand(*load_doc(text, file, fmt))


# The daemon parses specs in a pool of their own, never in asyncio's default pool, which other
# work needs (a slow spec there once starved the memory monitor). Two threads: one spec at a time
# is all the GIL allows, and a second lets a small spec through while a large one is parsed.
# Threads, not processes: the parse is linear now, and a 100,000-job result is costly to send back.
_PARSERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="torcd-spec")


async def parse_spec_in_pool(text: str, file: str = "<spec>", fmt: str | None = None) -> Workflow:
    """`parse_spec` off the event loop, in the spec parsers' pool (requests beyond two queue)."""
    call = functools.partial(contextvars.copy_context().run, parse_spec, text, file, fmt)
    return await asyncio.get_running_loop().run_in_executor(_PARSERS, call)


def load_doc(text: str, file: str, fmt: str | None = None) -> tuple[WorkflowDoc, Locator]:
    """The spec as written (before expansion), with a way back to its lines."""
    doc, loc = load_plain(text, file, fmt)
    try:
        return msgspec.convert(doc, WorkflowDoc), loc
    except msgspec.ValidationError as e:
        raise _validation_error(e, loc) from None
    except RecursionError:
        raise SpecError("the spec is nested too deeply", file=file) from None


def parse_tree(tree: dict, loc: Locator) -> Workflow:
    """Validate and expand a spec's plain tree, as `load_plain` gives it."""
    try:
        return _expand(msgspec.convert(tree, WorkflowDoc), loc)
    except msgspec.ValidationError as e:
        raise _validation_error(e, loc) from None


def spec_as_yaml(text: str, file: str, fmt: str | None = None) -> str:
    """The spec as YAML, whatever format it was written in (comments are not carried over)."""
    plain, _ = load_plain(text, file, fmt)
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    yaml.width = 4096
    yaml.dump(plain, out)
    return out.getvalue()


def load_plain(text: str, file: str, fmt: str | None = None) -> tuple[dict, Locator]:
    """The spec's values as plain dicts and lists, checked for control characters and aliases."""
    tree, loc = load(text, file, fmt)
    if not isinstance(tree, dict):
        line = tree.lc.line + 1 if hasattr(tree, "lc") else first_content_line(text)
        raise SpecError("the spec must be a mapping with `name` and `jobs`", file=file, line=line)
    try:
        return PlainTree(loc).convert(tree), loc
    except RecursionError:
        raise SpecError("the spec is nested too deeply", file=file) from None


def _validation_error(e: msgspec.ValidationError, loc: Locator) -> SpecError:
    text = str(e)
    message, _, path = text.rpartition(" - at `")
    path = path.rstrip("`") if message else "$"
    message = message or text
    m = _UNKNOWN_FIELD.search(message)
    if m:
        message = f"unknown key `{m[1]}`"
        path = f"{path}.{m[1]}"
    return loc.error(message, path)


def _check_handlers(doc: WorkflowDoc, loc: Locator) -> dict[str, list[Rule]]:
    handlers: dict[str, list[Rule]] = {}
    for h, handler in enumerate(doc.failure_handlers):
        if handler.name in handlers:
            raise loc.error(f"duplicate failure handler name {handler.name!r}",
                            f"$.failure_handlers[{h}].name")
        rules = []
        for r, rule in enumerate(handler.rules):
            at = f"$.failure_handlers[{h}].rules[{r}]"
            if rule.recovery_script and len(rule.recovery_script.encode()) > MAX_COMMAND_BYTES:
                raise loc.error(_too_long("the recovery script", len(rule.recovery_script.encode())),
                                f"{at}.recovery_script")
            if rule.exit_codes is not None and rule.match_all_exit_codes:
                raise loc.error("a rule has either `exit_codes` or `match_all_exit_codes: true`, not both", at)
            if not rule.exit_codes and not rule.match_all_exit_codes and not rule.causes:
                raise loc.error("a rule needs `causes`, `exit_codes` (non-empty) or `match_all_exit_codes: true`",
                                at)
            rules.append(rule)
        handlers[handler.name] = rules
    return handlers


def _job_parameters(doc: WorkflowDoc, job: JobSpec, at: str, loc: Locator) -> dict[str, list]:
    raw = merged_parameters(doc.parameters, job.use_parameters, job.parameters, at, loc)
    parsed = {}
    for name, spec in raw.items():
        if not name.isidentifier():
            raise loc.error(f"parameter name {name!r} is not an identifier", f"{at}.parameters")
        try:
            parsed[name] = P.parse_values(spec, max_values=MAX_JOBS)
        except P.ParameterError as e:
            field = f"{at}.parameters.{name}" if name in job.parameters else f"$.parameters.{name}"
            raise loc.error(f"bad parameter {name!r}: {e}", field) from None
    return parsed


def _check_requirements(doc: WorkflowDoc, loc: Locator) -> dict[str, Requirements]:
    out: dict[str, Requirements] = {}
    for i, r in enumerate(doc.resource_requirements):
        at = f"$.resource_requirements[{i}]"
        if r.name in out:
            raise loc.error(f"duplicate resource requirement name {r.name!r}", f"{at}.name")
        try:
            memory = None if r.memory is None else (
                int(r.memory) if isinstance(r.memory, int) and r.memory > 0 else parse_memory(str(r.memory)))
        except ValueError as e:
            raise loc.error(str(e), f"{at}.memory") from None
        try:
            runtime = None if r.runtime is None else parse_duration(r.runtime)
        except ValueError as e:
            raise loc.error(str(e), f"{at}.runtime") from None
        out[r.name] = Requirements(r.num_cpus, r.num_gpus, r.num_nodes, memory, runtime)
    return out


def _requirements(job: JobSpec, known: dict[str, Requirements], at: str, loc: Locator) -> Requirements:
    if job.resource_requirements is None:
        return Requirements(num_cpus=1 if job.num_cpus is UNSET else job.num_cpus)
    if job.num_cpus is not UNSET:
        raise loc.error("give either `num_cpus` or `resource_requirements`, not both", f"{at}.num_cpus")
    if job.resource_requirements not in known:
        names = ", ".join(sorted(known)) or "none are defined"
        raise loc.error(f"unknown resource requirement {job.resource_requirements!r} ({names})",
                        f"{at}.resource_requirements")
    return known[job.resource_requirements]


def _expand(doc: WorkflowDoc, loc: Locator) -> Workflow:
    handlers = _check_handlers(doc, loc)
    requirements = _check_requirements(doc, loc)
    default_scheduler = check_schedulers(doc.slurm_schedulers, doc.default_scheduler, doc.slurm_defaults, loc)
    apply_defaults(doc.slurm_defaults, doc.slurm_schedulers)
    scheduler_names = {s.name for s in doc.slurm_schedulers}
    needs = []
    for j, job in enumerate(doc.jobs):
        at = f"$.jobs[{j}]"
        needs.append(_requirements(job, requirements, at, loc))
        if job.failure_handler is not None and job.failure_handler not in handlers:
            raise loc.error(f"unknown failure handler {job.failure_handler!r}", f"{at}.failure_handler")
        if job.scheduler is not None and job.scheduler not in scheduler_names:
            raise loc.error(f"unknown scheduler {job.scheduler!r}", f"{at}.scheduler")
    jobs: list[ExpandedJob] = []
    origin: dict[str, int] = {}  # job name -> index in the spec, for error lines
    regexes: list[tuple[ExpandedJob, int, list[str]]] = []  # a job, its spec index, its filled regexes
    files = expand_files(doc.files, doc.parameters, loc)
    data = expand_user_data(doc.user_data, doc.parameters, loc)
    file_names, data_names, matcher = list(files), list(data), Matcher(loc)
    exchanged = 0  # files and user data read or written, over all jobs
    for j, (job, (named, rest)) in enumerate(zip(doc.jobs, _plan_expansion(doc, loc))):
        at = f"$.jobs[{j}]"
        scheduler = job.scheduler or default_scheduler
        try:
            for combo in (P.combinations(named, job.parameter_mode == "zip") if named else [{}]):
                name, command = P.fill(job.name, combo), P.fill(job.command, combo)
                if job.invocation_script:  # a script of several lines ends, then the command starts a line
                    script = P.fill(job.invocation_script, combo)
                    command = f"{script.rstrip(chr(10))}\n{command}" if "\n" in script else f"{script} {command}"
                fill = lambda names: [P.fill(n, combo) for n in names]  # noqa: E731
                # A listed file or entry templated over what the name does not multiply: every one (fan-in).
                every = lambda names: _union_deps(fill(names), rest)  # noqa: E731
                refs = _NO_REFERENCES
                if "${" in command:  # `${files.…}` and `${user_data.…}` become paths and names, and dependencies
                    command, refs = substitute_references(command, files, data, name, at, loc)
                used = None
                if job.input_files or job.output_files or job.input_file_regexes or job.output_file_regexes \
                        or refs.files.inputs or refs.files.outputs:
                    used = job_uses("file", every(job.input_files) + refs.files.inputs,
                                    every(job.output_files) + refs.files.outputs, fill(job.input_file_regexes),
                                    fill(job.output_file_regexes), files, file_names, matcher, name, at, loc)
                data_used = None
                if job.input_user_data or job.output_user_data or job.input_user_data_regexes \
                        or job.output_user_data_regexes or refs.user_data.inputs or refs.user_data.outputs:
                    data_used = job_uses("user_data", every(job.input_user_data) + refs.user_data.inputs,
                                         every(job.output_user_data) + refs.user_data.outputs,
                                         fill(job.input_user_data_regexes), fill(job.output_user_data_regexes),
                                         data, data_names, matcher, name, at, loc)
                for u in (used, data_used):
                    if u is not None:
                        exchanged += len(u.inputs) + len(u.outputs)
                if exchanged > MAX_DEPENDENCIES:  # each read can make a dependency
                    raise loc.error(f"the jobs up to here read and write {exchanged:,} files and user data; the "
                                    f"limit is {MAX_DEPENDENCIES:,}", at)
                if len(name) > MAX_NAME:
                    raise loc.error(f"job name {name[:40]!r}... is {len(name):,} characters long; "
                                    f"the limit is {MAX_NAME}", f"{at}.name")
                if len(command) * 4 > MAX_COMMAND_BYTES and len(command.encode()) > MAX_COMMAND_BYTES:
                    raise loc.error(_too_long("the command of job " + repr(name), len(command.encode())),
                                    f"{at}.command")
                deps = _union_deps([P.fill(d, combo) for d in job.depends_on], rest)
                need = needs[j]
                jobs.append(ExpandedJob(name, command, deps, job.failure_handler, need.num_cpus, job.env,
                                        scheduler, need.num_gpus, need.memory_bytes, need.runtime_seconds,
                                        job.cancel_on_blocking_job_failure,
                                        used.inputs if used else [], used.outputs if used else [],
                                        data_used.inputs if data_used else [], data_used.outputs if data_used else [],
                                        job.supports_termination))
                _note_origin(origin, name, j, loc)
                if job.depends_on_regexes:
                    regexes.append((jobs[-1], j, [P.fill(r, combo) for r in job.depends_on_regexes]))
        except P.ParameterError as e:
            raise loc.error(str(e), at) from None
    if regexes:
        _match_regexes(jobs, regexes, matcher, loc)
    deps, via = producer_edges([(j.name, JobFiles(j.inputs, j.outputs)) for j in jobs if j.inputs or j.outputs],
                               origin, "file", loc)
    data_deps, data_via = producer_edges([(j.name, JobFiles(j.data_inputs, j.data_outputs)) for j in jobs
                                          if j.data_inputs or j.data_outputs], origin, "user_data", loc)
    via.update({k: v for k, v in data_via.items() if k not in via})
    for j in jobs:
        if j.name in deps or j.name in data_deps:
            j.depends_on = list(dict.fromkeys(j.depends_on + deps.get(j.name, []) + data_deps.get(j.name, [])))
    _check_names(jobs, origin, loc, via)
    actions = check_actions(doc.actions, list(origin), scheduler_names, matcher, loc) if doc.actions else []
    schedule_by_actions(jobs, [doc.jobs[origin[j.name]].scheduler is not None for j in jobs], actions)
    if doc.jobs_sort_method != "none":
        _sort_claims(jobs, doc.jobs_sort_method)
    written = {out for j in jobs for out in j.outputs}
    required = list(dict.fromkeys(i for j in jobs for i in j.inputs if i not in written))
    return Workflow(doc.name, doc.description, doc.use_pending_failed, doc.output_dir, handlers, jobs,
                    doc.slurm_schedulers, doc.resource_monitor.monitoring() if doc.resource_monitor else Monitoring(),
                    doc.compute_node(), WorkflowAbout(doc.user, doc.project, metadata_of(doc.metadata, loc)),
                    doc.slurm_defaults,
                    files, required, data, actions)


def _plan_expansion(doc: WorkflowDoc, loc: Locator) -> list[tuple[dict, dict]]:
    """Each job's parameters, split into those its name multiplies and those that widen its
    depends_on, after checking what the expansion would make against the limits: sizes are
    computed from the ranges, nothing is built."""
    plans = []
    jobs = edges = size = 0
    for j, job in enumerate(doc.jobs):
        at = f"$.jobs[{j}]"
        values = _job_parameters(doc, job, at, loc)
        zipped = job.parameter_mode == "zip"
        named = values if zipped else {k: v for k, v in values.items() if k in P.placeholders(job.name)}
        rest = {k: v for k, v in values.items() if k not in named}
        try:
            count = P.product_size(named, zipped)
        except P.ParameterError as e:
            raise loc.error(str(e), f"{at}.parameters") from None
        jobs += count
        if jobs > MAX_JOBS:
            made = f"{count:,} jobs" + (f", {jobs:,} in all" if jobs > count else "")
            raise loc.error(f"parameters expand to {made}; the limit is {MAX_JOBS:,}", f"{at}.parameters")
        try:
            name_len = P.longest_fill(job.name, named)
            command_len = P.longest_fill(job.command, named)
            dep_counts = [P.product_size({k: rest[k] for k in P.placeholders(d) if k in rest})
                          for d in [*job.depends_on, *job.input_files, *job.output_files, *job.input_user_data,
                                    *job.output_user_data]]
            dep_len = sum(n * (P.longest_fill(d, values) + 1) for n, d in zip(dep_counts, job.depends_on))
        except P.ParameterError as e:
            raise loc.error(str(e), at) from None
        if name_len > MAX_NAME:
            raise loc.error(f"job names made from this template can be {name_len:,} characters long once "
                            f"parameters are filled in; the limit is {MAX_NAME}", f"{at}.name")
        if command_len > MAX_COMMAND_BYTES:
            raise loc.error(_too_long("the command", command_len), f"{at}.command")
        for key, value in job.env.items():
            if len(key.encode()) + 1 + len(value.encode()) > MAX_ARG_BYTES:
                raise loc.error(f"environment variable {key!r} is longer than {MAX_ARG_BYTES:,} bytes, "
                                "the most execve takes in one string on Linux (MAX_ARG_STRLEN)", f"{at}.env")
        edges += count * sum(dep_counts)
        size += count * (name_len + command_len + dep_len + sum(len(k) + len(v) + 2 for k, v in job.env.items()))
        if edges > MAX_DEPENDENCIES:
            raise loc.error(f"the jobs up to here have {edges:,} dependencies; the limit is "
                            f"{MAX_DEPENDENCIES:,}", f"{at}.depends_on")
        if size > MAX_EXPANDED_BYTES:
            raise loc.error(f"the jobs up to here expand to about {size / 2**20:,.0f} MiB of names, commands, "
                            f"dependencies and env; the limit is {MAX_EXPANDED_BYTES // 2**20} MiB", at)
        plans.append((named, rest))
    return plans


def _too_long(what: str, size: int) -> str:
    return (f"{what} is {size:,} bytes once parameters are filled in; the limit is {MAX_COMMAND_BYTES:,} "
            "bytes (Linux's execve takes at most 128 KiB in one argument, MAX_ARG_STRLEN, and torcd "
            "adds a prefix that records the exit status)")


def _note_origin(origin: dict[str, int], name: str, j: int, loc: Locator) -> None:
    if name in origin:
        first = f" (also made by jobs[{origin[name]}])" if origin[name] != j else ""
        raise loc.error(f"duplicate job name {name!r}{first}", f"$.jobs[{j}].name")
    origin[name] = j


def _union_deps(depends_on: list[str], values: dict[str, list]) -> list[str]:
    """A job that is not multiplied depends on (reads, writes) every expansion of a templated name."""
    out: dict[str, None] = {}
    for dep in depends_on:
        used = {k: values[k] for k in P.placeholders(dep) if k in values}
        if used:
            for combo in P.combinations(used):
                out[P.fill(dep, combo)] = None
        else:
            out[dep] = None
    return list(out)


def _sort_claims(jobs: list[ExpandedJob], method: str) -> None:
    """Number the jobs in the order they are claimed when ready together: the most GPUs first,
    then the longest runtime and the most memory (or memory, then runtime), then as written."""
    def key(j: ExpandedJob) -> tuple:
        runtime, memory = -(j.runtime_seconds or 0), -(j.memory_bytes or 0)
        return (-j.num_gpus, runtime, memory) if method == "gpus_runtime_memory" else (-j.num_gpus, memory, runtime)
    for rank, job in enumerate(sorted(jobs, key=key)):
        job.claim_order = rank


def _match_regexes(jobs: list[ExpandedJob], regexes: list[tuple[ExpandedJob, int, list[str]]], matcher: Matcher,
                   loc: Locator) -> None:
    """Add the jobs each `depends_on_regexes` entry matches (searched anywhere in the name, as
    Torc does) to the job's dependencies; a regex matching no other job is an error."""
    names = [j.name for j in jobs]
    edges = sum(len(j.depends_on) for j in jobs)
    for job, j, patterns in regexes:
        deps = dict.fromkeys(job.depends_on)
        for k, pattern in enumerate(patterns):
            at = f"$.jobs[{j}].depends_on_regexes[{k}]"
            matched = [n for n in matcher.search(pattern, names, at) if n != job.name]
            if not matched:
                raise loc.error(f"depends_on_regexes entry {pattern!r} of job {job.name!r} matches no other job",
                                at)
            deps.update(dict.fromkeys(matched))
            edges += len(matched)
            if edges > MAX_DEPENDENCIES:
                raise loc.error(f"depends_on_regexes make more than {MAX_DEPENDENCIES:,} dependencies", at)
        job.depends_on = list(deps)


def _check_names(jobs: list[ExpandedJob], origin: dict[str, int], loc: Locator,
                 via: dict[tuple[str, str], str]) -> None:
    seen = origin.keys()
    for job in jobs:
        for k, dep in enumerate(job.depends_on):
            if dep not in seen:
                j = origin[job.name]
                unfilled = P.placeholders(dep)
                hint = f" (no parameter for {', '.join(sorted(unfilled))})" if unfilled else ""
                raise loc.error(f"job {job.name!r} depends on {dep!r}, which does not exist{hint}",
                                f"$.jobs[{j}].depends_on")
            if dep == job.name:
                raise loc.error(f"job {job.name!r} depends on itself", f"$.jobs[{origin[job.name]}].depends_on")
    cycle = find_cycle({job.name: job.depends_on for job in jobs})
    if cycle:
        steps = [cycle[0]] + [f"{v} (writes {via[u, v]!r})" if (u, v) in via else v for u, v in zip(cycle, cycle[1:])]
        raise loc.error("dependency cycle: " + " -> ".join(steps), f"$.jobs[{origin[cycle[0]]}].depends_on")


def on_slurm(spec: Workflow, account: str | None) -> tuple[list[SlurmSchedulerSpec], list[ExpandedJob]]:
    """The schedulers of a workflow run on Slurm (one named `default` if the spec has none) and
    its jobs, each with its scheduler; InvalidParams for a job that has none."""
    schedulers = list(spec.schedulers)
    if not schedulers:
        schedulers = [SlurmSchedulerSpec(name="default", account=account)]
        apply_defaults(spec.slurm_defaults, schedulers)
    default = schedulers[0].name if len(schedulers) == 1 else None
    for j in spec.jobs:
        if j.scheduler is None and default is None:
            raise InvalidParams(f"job {j.name!r} has no scheduler and the spec has several slurm_schedulers but no "
                                "default_scheduler", {"field": "$.jobs"})
    return schedulers, [j if j.scheduler else msgspec.structs.replace(j, scheduler=default) for j in spec.jobs]
