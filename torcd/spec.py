"""Reading workflow specs (YAML or JSON) into validated, expanded jobs.

Errors name the file, the line and the field, and are raised before anything
is stored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from torcd.core import params as P
from torcd.core.graph import find_cycle
from torcd.core.resources import ComputeNode, Monitoring, Requirements, parse_duration, parse_memory
from torcd.spec_slurm import SlurmDefaults, SlurmSchedulerSpec, apply_defaults, check_schedulers
from torcd.core.retry import Rule
from torcd.errors import InvalidParams, SpecError

MAX_JOBS = 2_000_000
MAX_NAME = 512  # characters of a job name, after parameters are filled in
# execve takes at most 128 KiB (MAX_ARG_STRLEN) in one argument; a job's command is one
# argument of `bash -c`, after torcd's prefix that records its exit status.
MAX_ARG_BYTES = 128 * 1024 - 1
MAX_COMMAND_BYTES = 120 * 1024
MAX_EXPANDED_BYTES = 128 * 1024 * 1024  # names, commands, dependencies and env of all jobs
MAX_DEPENDENCIES = 4_000_000  # two per job at the job limit
MAX_ALIAS_COST = 200_000  # values (and 64-character pieces of strings) copied through YAML aliases
ExitCode = Annotated[int, Meta(ge=1, le=255)]
Name = Annotated[str, Meta(min_length=1, max_length=512)]
ParamValue = str | int | float | list[str | int | float]


class RuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    exit_codes: list[ExitCode] | None = None
    match_all_exit_codes: bool = False
    recovery_script: Annotated[str, Meta(min_length=1)] | None = None
    max_retries: Annotated[int, Meta(ge=1, le=1000)] = 3
    recovery_timeout: Annotated[float, Meta(gt=0)] = 3600.0
    causes: Annotated[list[Literal["timeout", "oom", "missing_output"]], Meta(min_length=1)] | None = None
    runtime_multiplier: Annotated[float, Meta(gt=0, le=1000)] | None = None
    memory_multiplier: Annotated[float, Meta(gt=0, le=1000)] | None = None


class FailureHandlerSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    rules: Annotated[list[RuleSpec], Meta(min_length=1)]


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

    def monitoring(self) -> Monitoring:
        every_job = self.jobs.enabled if self.jobs is not None else self.enabled is not False
        return Monitoring(every_job, self.sample_interval_seconds)


class WorkflowDoc(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    jobs: Annotated[list[JobSpec], Meta(min_length=1)]
    description: str = ""
    user: Annotated[str, Meta(max_length=256)] | None = None  # stored and shown; default: who submits it
    project: Annotated[str, Meta(max_length=256)] | None = None
    metadata: dict[str, Any] | None = None
    failure_handlers: list[FailureHandlerSpec] = []
    use_pending_failed: bool | None = None
    output_dir: Annotated[str, Meta(min_length=1)] = "output"
    parameters: dict[str, ParamValue] = {}
    slurm_schedulers: list[SlurmSchedulerSpec] = []
    default_scheduler: Name | None = None
    slurm_defaults: SlurmDefaults = {}
    resource_requirements: list[ResourceRequirementSpec] = []
    resource_monitor: ResourceMonitorSpec | None = None
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


_PATH_TOKEN = re.compile(r"\.([A-Za-z_][\w]*)|\[(\d+)\]")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")


class Locator:
    """Maps `$.jobs[3].name`-style paths to 1-based line numbers of a ruamel tree."""

    def __init__(self, tree: Any, file: str):
        self.tree, self.file = tree, file

    def line(self, path: str) -> int | None:
        node, line = self.tree, None
        for key, index in _PATH_TOKEN.findall(path.removeprefix("$")):
            if key and isinstance(node, CommentedMap) and key in node:
                line = node.lc.key(key)[0] + 1
                node = node[key]
            elif index and isinstance(node, CommentedSeq) and int(index) < len(node):
                line = node.lc.item(int(index))[0] + 1
                node = node[int(index)]
            else:
                break
        if line is None and hasattr(self.tree, "lc"):
            line = self.tree.lc.line + 1
        return line

    def error(self, message: str, path: str) -> SpecError:
        return SpecError(message, file=self.file, line=self.line(path), field=path)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_TAB_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Text that a shell reads whole may span lines; names, paths and Slurm fields may not.
_MULTILINE = frozenset({"command", "recovery_script", "description"})
Chain = tuple[Any, str | int] | None  # (parent chain, key or index), for a field path on error


class _PlainTree:
    """The ruamel tree as builtins, refusing control characters, bad env names and alias bombs.

    An alias is shared in the ruamel tree but copied here, so what it copies is counted:
    a few hundred bytes of nested aliases would otherwise become gigabytes.
    """

    def __init__(self, loc: Locator):
        self.loc, self.seen, self.alias_cost = loc, set[int](), 0

    def convert(self, node: Any, chain: Chain = None, key: str = "", alias: Chain = None) -> Any:
        if isinstance(node, (dict, list)):
            if alias is None and id(node) in self.seen:
                alias = chain[0] if chain else chain  # what holds the alias: its line is where `*name` is
            self.seen.add(id(node))
        if alias is not None:
            self.alias_cost += 1 + (len(node) // 64 if isinstance(node, str) else 0)
            if self.alias_cost > MAX_ALIAS_COST:
                raise self.loc.error(f"YAML aliases here copy more than {MAX_ALIAS_COST:,} values; "
                                     "write the values out or use fewer nested aliases", _path(alias))
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                k = k if isinstance(k, str) else str(k)
                self._check_key(k, key, chain)
                out[k] = self.convert(v, (chain, k), f"env:{k}" if key == "env" else k, alias)
            return out
        if isinstance(node, list):
            return [self.convert(v, (chain, i), key, alias) for i, v in enumerate(node)]
        # ruamel's scalar subclasses (ScalarFloat, ScalarInt, quoted strings) as builtins
        for kind in (bool, int, float, str):
            if isinstance(node, kind):
                if kind is str:
                    self._check_text(node, key, chain)
                return kind(node)
        return node

    def _check_text(self, text: str, key: str, chain: Chain) -> None:
        multiline = key in _MULTILINE or key.startswith("env:")
        bad = (_CONTROL_BUT_TAB_NEWLINE if multiline else _CONTROL).search(text)
        if bad:
            allowed = "printable text, tabs and newlines" if multiline else "one line of printable text"
            name = key.removeprefix("env:") or "a value"
            raise self.loc.error(f"`{name}` contains the control character {bad[0]!r}; it must be {allowed}",
                                 _path(chain))

    def _check_key(self, name: str, parent_key: str, chain: Chain) -> None:
        if parent_key == "env":
            if not name:
                raise self.loc.error("an environment variable name is empty", _path(chain))
            if "=" in name:
                raise self.loc.error(f"environment variable name {name!r} contains `=`", _path(chain))
        bad = _CONTROL.search(name)
        if bad:
            raise self.loc.error(f"key {name!r} contains the control character {bad[0]!r}", _path(chain))


def _path(chain: Chain) -> str:
    parts: list[str] = []
    while chain is not None:
        chain, part = chain
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "$" + "".join(reversed(parts))


def load_tree(text: str, file: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    if file.lower().endswith((".json5", ".kdl")):
        raise SpecError("JSON5/KDL specs are not supported yet; write the spec as YAML or JSON", file=file)
    try:
        return yaml.load(text)
    except RecursionError:
        raise SpecError("cannot parse: nested too deeply", file=file) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = e.problem or e.context or "invalid syntax"
        raise SpecError(f"cannot parse: {problem}", file=file, line=line) from None
    except YAMLError as e:
        raise SpecError(f"cannot parse: {e}", file=file) from None


def _first_content_line(text: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            return n
    return 1


def parse_spec(text: str, file: str = "<spec>") -> Workflow:
    """Validate and expand a spec's text; raise SpecError naming file, line and field."""
    return _expand(*load_doc(text, file))


def load_doc(text: str, file: str) -> tuple[WorkflowDoc, Locator]:
    """The spec as written (before expansion), with a way back to its lines."""
    tree = load_tree(text, file)
    if not isinstance(tree, CommentedMap):
        line = tree.lc.line + 1 if hasattr(tree, "lc") else _first_content_line(text)
        raise SpecError("the spec must be a mapping with `name` and `jobs`", file=file, line=line)
    loc = Locator(tree, file)
    try:
        doc = msgspec.convert(_PlainTree(loc).convert(tree), WorkflowDoc)
    except msgspec.ValidationError as e:
        raise _validation_error(e, loc) from None
    except RecursionError:
        raise SpecError("the spec is nested too deeply", file=file) from None
    return doc, loc


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
            rules.append(Rule(**msgspec.structs.asdict(rule)))  # the same fields, validated here
        handlers[handler.name] = rules
    return handlers


def _job_parameters(doc: WorkflowDoc, job: JobSpec, at: str, loc: Locator) -> dict[str, list]:
    raw: dict[str, Any] = {}
    if job.use_parameters is not None:
        for i, name in enumerate(job.use_parameters):
            if name not in doc.parameters:
                raise loc.error(f"no workflow parameter named {name!r}", f"{at}.use_parameters[{i}]")
            raw[name] = doc.parameters[name]
    raw.update(job.parameters)
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
    for j, (job, (named, rest)) in enumerate(zip(doc.jobs, _plan_expansion(doc, loc))):
        at = f"$.jobs[{j}]"
        scheduler = job.scheduler or default_scheduler
        try:
            for combo in (P.combinations(named) if named else [{}]):
                name, command = P.fill(job.name, combo), P.fill(job.command, combo)
                if job.invocation_script:
                    command = f"{P.fill(job.invocation_script, combo)} {command}"
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
                                        job.cancel_on_blocking_job_failure))
                _note_origin(origin, name, j, loc)
        except P.ParameterError as e:
            raise loc.error(str(e), at) from None
    _check_names(jobs, origin, loc)
    return Workflow(doc.name, doc.description, doc.use_pending_failed, doc.output_dir, handlers, jobs,
                    doc.slurm_schedulers, doc.resource_monitor.monitoring() if doc.resource_monitor else Monitoring(),
                    doc.compute_node(), WorkflowAbout(doc.user, doc.project, doc.metadata), doc.slurm_defaults)


def _plan_expansion(doc: WorkflowDoc, loc: Locator) -> list[tuple[dict, dict]]:
    """Each job's parameters, split into those its name multiplies and those that widen its
    depends_on, after checking what the expansion would make against the limits: sizes are
    computed from the ranges, nothing is built."""
    plans = []
    jobs = edges = size = 0
    for j, job in enumerate(doc.jobs):
        at = f"$.jobs[{j}]"
        values = _job_parameters(doc, job, at, loc)
        named = {k: v for k, v in values.items() if k in P.placeholders(job.name)}
        rest = {k: v for k, v in values.items() if k not in named}
        count = P.product_size(named)
        jobs += count
        if jobs > MAX_JOBS:
            made = f"{count:,} jobs" + (f", {jobs:,} in all" if jobs > count else "")
            raise loc.error(f"parameters expand to {made}; the limit is {MAX_JOBS:,}", f"{at}.parameters")
        try:
            name_len = P.longest_fill(job.name, named)
            command_len = P.longest_fill(job.command, named)
            dep_counts = [P.product_size({k: rest[k] for k in P.placeholders(d) if k in rest})
                          for d in job.depends_on]
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
    """A job that is not multiplied depends on every expansion of a templated name."""
    out: dict[str, None] = {}
    for dep in depends_on:
        used = {k: values[k] for k in P.placeholders(dep) if k in values}
        if used:
            for combo in P.combinations(used):
                out[P.fill(dep, combo)] = None
        else:
            out[dep] = None
    return list(out)


def _check_names(jobs: list[ExpandedJob], origin: dict[str, int], loc: Locator) -> None:
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
        raise loc.error("dependency cycle: " + " -> ".join(cycle), f"$.jobs[{origin[cycle[0]]}].depends_on")


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
