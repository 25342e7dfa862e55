"""Reading workflow specs (YAML or JSON) into validated, expanded jobs.

Errors name the file, the line and the field, and are raised before anything
is stored. The spec's structs are in `schema`, each job's expansion in `expand`
and the whole workflow's dependency graph in `link`; ExpandedJob, Workflow,
WorkflowDoc and MAX_COMMAND_BYTES are still imported from here.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from msgspec import UNSET
from ruamel.yaml import YAML

from torcd.core.resources import Monitoring, Requirements, parse_duration, parse_memory
from torcd.core.retry import Rule
from torcd.core.spawning import DEFAULT_MAX_ITERATIONS, Spawning
from torcd.errors import InvalidParams, SpecError
from torcd.spec.actions import check_actions, schedule_by_actions
from torcd.spec.collector import collector_paused
from torcd.spec.data import Dataset, expand_files, expand_user_data
from torcd.spec.execution import Execution, StdioSpec, execution_of
from torcd.spec.expand import JobExpander, plan_expansion, too_long
from torcd.spec.link import link, sort_claims
from torcd.spec.load import Locator, first_content_line, load, metadata_of
from torcd.spec.plain import NotPlain, PlainTree, TreeError, check_in_place
from torcd.spec.schema import (
    MAX_ARG_BYTES,
    MAX_COMMAND_BYTES,
    ExpandedJob,
    JobSpec,
    Workflow,
    WorkflowAbout,
    WorkflowDoc,
)
from torcd.spec.slurm import SlurmSchedulerSpec, apply_defaults, check_schedulers
from torcd.spec.tables import apply_tables, read_file
from torcd.spec.variables import apply_variables, declared, fill_variables

_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")
# Keys of newer Torc that torc-py does not run: refused (never half-run), saying what to use instead.
TORC_KEYS_NOT_HERE = {
    "access_groups": "a daemon serves one user; share results through files",
}


def parse_spec(
    text: str, file: str = "<spec>", fmt: str | None = None, cwd: str | None = None, stdio: dict | None = None
) -> Workflow:
    """Validate and expand a spec's text; raise SpecError naming file, line and field. Parameter
    tables are read from `cwd` (the process's own when None). `stdio`: the stdio of the workflow
    these jobs join (jobs added to it), for jobs that set none."""
    with collector_paused():
        return _expand(*load_doc(text, file, fmt, cwd), inherited_stdio=stdio)


# The daemon parses specs in a pool of their own, never in asyncio's default pool, which other
# work needs (a slow spec there once starved the memory monitor). Two threads: one spec at a time
# is all the GIL allows, and a second lets a small spec through while a large one is parsed.
# Threads, not processes: the parse is linear now, and a 100,000-job result is costly to send back.
_PARSERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="torcd-spec")


async def parse_spec_in_pool(
    text: str, file: str = "<spec>", fmt: str | None = None, cwd: str | None = None, stdio: dict | None = None
) -> Workflow:
    """`parse_spec` off the event loop, in the spec parsers' pool (requests beyond two queue)."""
    call = functools.partial(contextvars.copy_context().run, parse_spec, text, file, fmt, cwd, stdio)
    return await asyncio.get_running_loop().run_in_executor(_PARSERS, call)


def load_doc(text: str, file: str, fmt: str | None = None, cwd: str | None = None) -> tuple[WorkflowDoc, Locator]:
    """The spec as written (before expansion), with a way back to its lines."""
    with collector_paused():
        tree, loc = load_plain(text, file, fmt)
        return doc_of(tree, loc, cwd), loc


def doc_of(tree: dict, loc: Locator, cwd: str | None = None) -> WorkflowDoc:
    """A spec's plain tree, as `load_plain` gives it, as the spec's structs (a new copy each time),
    its parameter tables read (from `cwd`) and its variables filled in."""
    try:
        with collector_paused():
            return msgspec.convert(_resolved(tree, loc, cwd), WorkflowDoc)
    except msgspec.ValidationError as e:
        raise _validation_error(e, loc) from None
    except RecursionError:
        raise SpecError("the spec is nested too deeply", file=loc.file) from None


def _resolved(tree: dict, loc: Locator, cwd: str | None) -> dict:
    """The tree with its parameter tables as `parameters` and its variables filled in (a table's
    path may name variables; a table's columns are parameters, which variables may not be)."""
    variables = declared(tree, loc.error)
    tree = apply_tables(
        tree, loc.error, read_file(cwd), lambda path, field: fill_variables(path, variables, field, loc.error)
    )
    return apply_variables(tree, variables, loc.error)


def parse_tree(tree: dict, loc: Locator, cwd: str | None = None) -> Workflow:
    """Validate and expand a spec's plain tree, as `load_plain` gives it."""
    with collector_paused():
        return _expand(doc_of(tree, loc, cwd), loc)


def spec_as_yaml(text: str, file: str, fmt: str | None = None) -> str:
    """The spec as YAML, whatever format it was written in (comments are not carried over)."""
    plain, _ = load_plain(text, file, fmt)
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 4096
    yaml.dump(plain, out)
    return out.getvalue()


def load_plain(text: str, file: str, fmt: str | None = None) -> tuple[dict, Locator]:
    """The spec's values as plain dicts and lists, checked for control characters and aliases."""
    with collector_paused():
        return _load_plain(text, file, fmt)


def _load_plain(text: str, file: str, fmt: str | None) -> tuple[dict, Locator]:
    tree, loc = load(text, file, fmt)
    if not isinstance(tree, dict):
        line = tree.lc.line + 1 if hasattr(tree, "lc") else loc.root_line or first_content_line(text)
        raise SpecError("the spec must be a mapping with `name` and `jobs`", file=file, line=line)
    if loc.checked:
        return tree, loc
    try:
        try:
            check_in_place(tree)
            return tree, loc
        except NotPlain:
            return PlainTree(loc.error).convert(tree), loc
        except TreeError as e:
            raise loc.error(e.message, e.field) from None
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
        if advice := TORC_KEYS_NOT_HERE.get(m[1]):
            message = f"Torc's `{m[1]}` is not supported by torc-py: {advice} (docs/torc-users.md)"
        path = f"{path}.{m[1]}"
    elif message.startswith("Invalid enum value") and (allowed := _literal_values(path)):
        message += f"; expected one of {', '.join(map(str, allowed))}"
    return loc.error(message, path)


def _literal_values(path: str) -> tuple | None:
    """The values a spec field takes (its Literal), found by walking the spec's types along the
    error's path (`$.jobs[0].stdio.mode`); None where the path leads to no Literal."""
    info: Any = msgspec.inspect.type_info(WorkflowDoc)
    for step in re.findall(r"\.([A-Za-z_]\w*)|\[\d+\]", path):
        while isinstance(info, msgspec.inspect.UnionType):  # `X | None`: the one that is not None
            info = next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)), None)
        if step and isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == step), None)
        elif not step and isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        else:
            return None
    return info.values if isinstance(info, msgspec.inspect.LiteralType) else None


def _check_handlers(doc: WorkflowDoc, loc: Locator) -> dict[str, list[Rule]]:
    handlers: dict[str, list[Rule]] = {}
    for h, handler in enumerate(doc.failure_handlers):
        if handler.name in handlers:
            raise loc.error(f"duplicate failure handler name {handler.name!r}", f"$.failure_handlers[{h}].name")
        rules = []
        for r, rule in enumerate(handler.rules):
            at = f"$.failure_handlers[{h}].rules[{r}]"
            if rule.recovery_script and len(rule.recovery_script.encode()) > MAX_COMMAND_BYTES:
                raise loc.error(
                    too_long("the recovery script", len(rule.recovery_script.encode())), f"{at}.recovery_script"
                )
            if rule.exit_codes is not None and rule.match_all_exit_codes:
                raise loc.error("a rule has either `exit_codes` or `match_all_exit_codes: true`, not both", at)
            if not rule.exit_codes and not rule.match_all_exit_codes and not rule.causes:
                raise loc.error("a rule needs `causes`, `exit_codes` (non-empty) or `match_all_exit_codes: true`", at)
            rules.append(rule)
        handlers[handler.name] = rules
    return handlers


def _check_requirements(doc: WorkflowDoc, loc: Locator) -> dict[str, Requirements]:
    out: dict[str, Requirements] = {}
    for i, r in enumerate(doc.resource_requirements):
        at = f"$.resource_requirements[{i}]"
        if r.name in out:
            raise loc.error(f"duplicate resource requirement name {r.name!r}", f"{at}.name")
        try:
            memory = (
                None
                if r.memory is None
                else (int(r.memory) if isinstance(r.memory, int) and r.memory > 0 else parse_memory(str(r.memory)))
            )
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
        raise loc.error(
            f"unknown resource requirement {job.resource_requirements!r} ({names})", f"{at}.resource_requirements"
        )
    return known[job.resource_requirements]


def _expand(doc: WorkflowDoc, loc: Locator, inherited_stdio: dict | None = None) -> Workflow:
    handlers = _check_handlers(doc, loc)
    requirements = _check_requirements(doc, loc)
    default_scheduler = check_schedulers(doc.slurm_schedulers, doc.default_scheduler, doc.slurm_defaults, loc)
    apply_defaults(doc.slurm_defaults, doc.slurm_schedulers)
    scheduler_names = {s.name for s in doc.slurm_schedulers}
    for key, value in doc.env.items():  # named here, not on the first job it reaches
        if len(key.encode()) + 1 + len(value.encode()) > MAX_ARG_BYTES:
            raise loc.error(
                f"environment variable {key!r} is longer than {MAX_ARG_BYTES:,} bytes, the most execve takes",
                f"$.env.{key}",
            )
    if doc.env:
        for job in doc.jobs:
            job.env = {**doc.env, **job.env}
    needs = [_check_job(doc, j, requirements, handlers, scheduler_names, loc) for j in range(len(doc.jobs))]
    files = expand_files(doc.files, doc.parameters, loc)
    data = expand_user_data(doc.user_data, doc.parameters, loc)
    datasets = _datasets(doc, loc)
    expander = JobExpander(files, data, loc, datasets)
    for j, (job, (named, rest)) in enumerate(zip(doc.jobs, plan_expansion(doc, loc))):
        expander.expand(j, job, named, rest, needs[j], job.scheduler or default_scheduler)
    jobs, origin = expander.jobs, expander.origin
    link(jobs, origin, expander.regexes, expander.matcher, loc)
    actions = check_actions(doc.actions, list(origin), scheduler_names, expander.matcher, loc) if doc.actions else []
    schedule_by_actions(jobs, [doc.jobs[origin[j.name]].scheduler is not None for j in jobs], actions)
    if doc.jobs_sort_method != "none" or any(job.priority for job in doc.jobs):
        sort_claims(jobs, doc.jobs_sort_method)
    stdio = doc.execution_config.stdio if doc.execution_config else None
    if stdio is None and inherited_stdio is not None:
        stdio = msgspec.convert(inherited_stdio, StdioSpec)
    if stdio is not None or any(job.stdio for job in doc.jobs):
        for ej in jobs:  # a job's own stdio replaces the workflow's whole, as in Torc
            own = doc.jobs[origin[ej.name]].stdio or stdio
            if own is not None and own.mode != "separate":
                ej.stdio = own.mode
            ej.delete_stdio = bool(own and own.delete_on_success)
    execution = Execution()
    if doc.execution_config is not None:
        chosen, refusal = execution_of(doc.execution_config, bool(doc.slurm_schedulers))
        if refusal is not None:
            raise loc.error(refusal[1], refusal[0])
        execution = chosen or execution
    written = {out for j in jobs for out in j.outputs}
    required = list(dict.fromkeys(i for j in jobs for i in j.inputs if i not in written))
    made = {out for j in jobs for out in j.dataset_outputs}
    required_sets = list(dict.fromkeys(i for j in jobs for i in j.dataset_inputs if i not in made))
    return Workflow(
        doc.name,
        doc.description,
        doc.use_pending_failed,
        doc.output_dir,
        handlers,
        jobs,
        doc.slurm_schedulers,
        doc.resource_monitor.monitoring() if doc.resource_monitor else Monitoring(),
        doc.compute_node(),
        WorkflowAbout(doc.user, doc.project, metadata_of(doc.metadata, loc)),
        doc.slurm_defaults,
        files,
        required,
        data,
        actions,
        execution,
        Spawning(
            doc.dynamic_jobs.max_iterations if doc.dynamic_jobs else DEFAULT_MAX_ITERATIONS,
            doc.env,
            [msgspec.to_builtins(r) for r in doc.resource_requirements],
            msgspec.to_builtins(stdio) if stdio is not None else None,
        ),
        datasets,
        required_sets,
    )


def _datasets(doc: WorkflowDoc, loc: Locator) -> dict[str, Dataset]:
    """Torc's `datasets`, by name."""
    out: dict[str, Dataset] = {}
    for i, d in enumerate(doc.datasets):
        if d.name in out:
            raise loc.error(f"dataset {d.name!r} is declared twice", f"$.datasets[{i}].name")
        out[d.name] = Dataset(d.name, d.path, d.hash_mode, d.description, i)
    return out


def _check_job(
    doc: WorkflowDoc,
    j: int,
    requirements: dict[str, Requirements],
    handlers: dict[str, list[Rule]],
    scheduler_names: set[str],
    loc: Locator,
) -> Requirements:
    """What spec job `j` names exists; its resource needs."""
    job, at = doc.jobs[j], f"$.jobs[{j}]"
    need = _requirements(job, requirements, at, loc)
    if job.failure_handler is not None and job.failure_handler not in handlers:
        raise loc.error(f"unknown failure handler {job.failure_handler!r}", f"{at}.failure_handler")
    if job.scheduler is not None and job.scheduler not in scheduler_names:
        raise loc.error(f"unknown scheduler {job.scheduler!r}", f"{at}.scheduler")
    return need


def refuse_labels_on_slurm(jobs: list[ExpandedJob]) -> None:
    """A labelled job runs only while a `run --label` follows it, on this machine; a Slurm
    workflow's jobs run in allocations, which never take one: it would wait for ever."""
    if labelled := next((j for j in jobs if j.label is not None), None):
        raise InvalidParams(
            f"job {labelled.name!r} has the label {labelled.label!r}: labelled jobs run only on this machine, "
            "while `torcctl run WF --label` follows them; a Slurm workflow's jobs run in allocations "
            "(give it its own scheduler instead)",
            {"field": "$.jobs"},
        )


def on_slurm(spec: Workflow, account: str | None) -> tuple[list[SlurmSchedulerSpec], list[ExpandedJob]]:
    """The schedulers of a workflow run on Slurm (one named `default` if the spec has none) and
    its jobs, each with its scheduler; InvalidParams for a job that has none."""
    refuse_labels_on_slurm(spec.jobs)
    schedulers = list(spec.schedulers)
    if not schedulers:
        schedulers = [SlurmSchedulerSpec(name="default", account=account)]
        apply_defaults(spec.slurm_defaults, schedulers)
    default = schedulers[0].name if len(schedulers) == 1 else None
    for j in spec.jobs:
        if j.scheduler is None and default is None:
            raise InvalidParams(
                f"job {j.name!r} has no scheduler and the spec has several slurm_schedulers but no default_scheduler",
                {"field": "$.jobs"},
            )
    return schedulers, [j if j.scheduler else msgspec.structs.replace(j, scheduler=default) for j in spec.jobs]
