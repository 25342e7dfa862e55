"""Reading workflow specs (YAML or JSON) into validated, expanded jobs.

Errors name the file, the line and the field, and are raised before anything
is stored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from torcd.core import params as P
from torcd.core.graph import find_cycle
from torcd.core.retry import Rule
from torcd.errors import SpecError

MAX_JOBS = 2_000_000
ExitCode = Annotated[int, Meta(ge=1, le=255)]
Name = Annotated[str, Meta(min_length=1, max_length=512)]
ParamValue = str | int | float | list[str | int | float]


class RuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    exit_codes: list[ExitCode] | None = None
    match_all_exit_codes: bool = False
    recovery_script: Annotated[str, Meta(min_length=1)] | None = None
    max_retries: Annotated[int, Meta(ge=1, le=1000)] = 3
    recovery_timeout: Annotated[float, Meta(gt=0)] = 3600.0


class FailureHandlerSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    rules: Annotated[list[RuleSpec], Meta(min_length=1)]


Walltime = Annotated[str, Meta(pattern=r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")]
Memory = Annotated[str, Meta(pattern=r"^\d+[KMGT]?$")]


class SlurmSchedulerSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    account: str | None = None
    partition: str | None = None
    walltime: Walltime = "01:00:00"
    nodes: Annotated[int, Meta(ge=1, le=10_000)] = 1
    cpus: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    mem: Memory | None = None
    extra: list[str] = []
    max_allocations: Annotated[int, Meta(ge=1, le=10_000)] = 4


class JobSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    command: Annotated[str, Meta(min_length=1)]
    depends_on: list[Name] = []
    failure_handler: Name | None = None
    parameters: dict[str, ParamValue] = {}
    use_parameters: list[str] | None = None
    num_cpus: Annotated[int, Meta(ge=1, le=4096)] = 1
    env: dict[str, str] = {}
    scheduler: Name | None = None


class WorkflowDoc(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    jobs: Annotated[list[JobSpec], Meta(min_length=1)]
    description: str = ""
    failure_handlers: list[FailureHandlerSpec] = []
    use_pending_failed: bool | None = None
    output_dir: Annotated[str, Meta(min_length=1)] = "output"
    parameters: dict[str, ParamValue] = {}
    slurm_schedulers: list[SlurmSchedulerSpec] = []
    default_scheduler: Name | None = None


class ExpandedJob(msgspec.Struct, array_like=True):
    name: str
    command: str
    depends_on: list[str]
    failure_handler: str | None
    num_cpus: int
    env: dict[str, str]
    scheduler: str | None = None


class Workflow(msgspec.Struct):
    """A spec after validation and parameter expansion: what the store saves."""

    name: str
    description: str
    use_pending_failed: bool | None
    output_dir: str
    failure_handlers: dict[str, list[Rule]]
    jobs: list[ExpandedJob]
    schedulers: list[SlurmSchedulerSpec] = []


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


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    # ruamel's scalar subclasses (ScalarFloat, ScalarInt, quoted strings) as builtins
    for kind in (bool, int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def load_tree(text: str, file: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
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
        doc = msgspec.convert(_plain(tree), WorkflowDoc)
    except msgspec.ValidationError as e:
        raise _validation_error(e, loc) from None
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
            if rule.exit_codes is not None and rule.match_all_exit_codes:
                raise loc.error("a rule has either `exit_codes` or `match_all_exit_codes: true`, not both", at)
            if not rule.exit_codes and not rule.match_all_exit_codes:
                raise loc.error("a rule needs `exit_codes` (non-empty) or `match_all_exit_codes: true`", at)
            rules.append(Rule(exit_codes=rule.exit_codes, match_all_exit_codes=rule.match_all_exit_codes,
                              recovery_script=rule.recovery_script, max_retries=rule.max_retries,
                              recovery_timeout=rule.recovery_timeout))
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
            parsed[name] = P.parse_values(spec)
        except P.ParameterError as e:
            field = f"{at}.parameters.{name}" if name in job.parameters else f"$.parameters.{name}"
            raise loc.error(f"bad parameter {name!r}: {e}", field) from None
    return parsed


def _check_schedulers(doc: WorkflowDoc, loc: Locator) -> str | None:
    """Validate scheduler names; return the default one (explicit, or the only one)."""
    names: set[str] = set()
    for i, sched in enumerate(doc.slurm_schedulers):
        if sched.name in names:
            raise loc.error(f"duplicate scheduler name {sched.name!r}", f"$.slurm_schedulers[{i}].name")
        names.add(sched.name)
    if doc.default_scheduler is not None:
        if doc.default_scheduler not in names:
            raise loc.error(f"unknown scheduler {doc.default_scheduler!r}", "$.default_scheduler")
        return doc.default_scheduler
    return doc.slurm_schedulers[0].name if len(doc.slurm_schedulers) == 1 else None


def _expand(doc: WorkflowDoc, loc: Locator) -> Workflow:
    handlers = _check_handlers(doc, loc)
    default_scheduler = _check_schedulers(doc, loc)
    scheduler_names = {s.name for s in doc.slurm_schedulers}
    jobs: list[ExpandedJob] = []
    origin: dict[str, int] = {}  # job name -> index in the spec, for error lines
    for j, job in enumerate(doc.jobs):
        at = f"$.jobs[{j}]"
        if job.failure_handler is not None and job.failure_handler not in handlers:
            raise loc.error(f"unknown failure handler {job.failure_handler!r}", f"{at}.failure_handler")
        if job.scheduler is not None and job.scheduler not in scheduler_names:
            raise loc.error(f"unknown scheduler {job.scheduler!r}", f"{at}.scheduler")
        scheduler = job.scheduler or default_scheduler
        values = _job_parameters(doc, job, at, loc)
        size = P.product_size(values)
        if size > MAX_JOBS or len(jobs) + size > MAX_JOBS:
            raise loc.error(f"parameters expand to {size:,} jobs; the limit is {MAX_JOBS:,}", f"{at}.parameters")
        try:
            # Multiplied over the parameters its name uses; the others widen depends_on (a union).
            named = {k: v for k, v in values.items() if k in P.placeholders(job.name)}
            rest = {k: v for k, v in values.items() if k not in named}
            for combo in (P.combinations(named) if named else [{}]):
                deps = _union_deps([P.fill(d, combo) for d in job.depends_on], rest)
                jobs.append(ExpandedJob(P.fill(job.name, combo), P.fill(job.command, combo), deps,
                                        job.failure_handler, job.num_cpus, job.env, scheduler))
                _note_origin(origin, jobs[-1].name, j, loc)
        except P.ParameterError as e:
            raise loc.error(str(e), at) from None
    _check_names(jobs, origin, loc)
    return Workflow(doc.name, doc.description, doc.use_pending_failed, doc.output_dir, handlers, jobs,
                    doc.slurm_schedulers)


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
