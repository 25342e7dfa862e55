"""Expanding each job of a spec into the jobs its parameters make, one spec job at a time.

Limits are checked from the parameter ranges before anything is built (`plan_expansion`); the
jobs are then made in spec order, so an error names the first job that breaks a rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from torcd.core import params as P
from torcd.core.labels import label_problem
from torcd.core.resources import Requirements
from torcd.spec.data import (
    Dataset,
    File,
    JobFiles,
    Matcher,
    References,
    UserData,
    job_uses,
    merged_parameters,
    substitute_references,
)
from torcd.spec.load import Locator
from torcd.spec.schema import (
    MAX_ARG_BYTES,
    MAX_COMMAND_BYTES,
    MAX_DEPENDENCIES,
    MAX_EXPANDED_BYTES,
    MAX_JOBS,
    MAX_NAME,
    ExpandedJob,
    JobSpec,
    WorkflowDoc,
)

_NO_REFERENCES = References(JobFiles([], []), JobFiles([], []))
Values = dict[str, Sequence[P.Scalar]]  # each parameter's values


def too_long(what: str, size: int) -> str:
    return (
        f"{what} is {size:,} bytes once parameters are filled in; the limit is {MAX_COMMAND_BYTES:,} "
        "bytes (Linux's execve takes at most 128 KiB in one argument, MAX_ARG_STRLEN, and torcd "
        "adds a prefix that records the exit status)"
    )


def _job_parameters(doc: WorkflowDoc, job: JobSpec, at: str, loc: Locator) -> Values:
    raw = merged_parameters(doc.parameters, job.use_parameters, job.parameters, at, loc)
    parsed: Values = {}
    for name, spec in raw.items():
        if not name.isidentifier():
            raise loc.error(f"parameter name {name!r} is not an identifier", f"{at}.parameters")
        try:
            parsed[name] = P.parse_values(spec, max_values=MAX_JOBS)
        except P.ParameterError as e:
            field = f"{at}.parameters.{name}" if name in job.parameters else f"$.parameters.{name}"
            raise loc.error(f"bad parameter {name!r}: {e}", field) from None
    return parsed


def plan_expansion(doc: WorkflowDoc, loc: Locator) -> list[tuple[Values, Values]]:
    """Each job's parameters, split into those its name multiplies and those that widen its
    depends_on, after checking what the expansion would make against the limits: sizes are
    computed from the ranges, nothing is built."""
    plans = []
    jobs = edges = size = 0
    for j, job in enumerate(doc.jobs):
        at = f"$.jobs[{j}]"
        values = _job_parameters(doc, job, at, loc)
        depends_on = job.depends_on or []  # never None after JobSpec.__post_init__
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
            dep_counts = [
                P.product_size({k: rest[k] for k in P.placeholders(d) if k in rest})
                for d in [*depends_on, *job.input_files, *job.output_files, *job.input_user_data, *job.output_user_data]
            ]
            dep_len = sum(n * (P.longest_fill(d, values) + 1) for n, d in zip(dep_counts, depends_on))
        except P.ParameterError as e:
            raise loc.error(str(e), at) from None
        if name_len > MAX_NAME:
            raise loc.error(
                f"job names made from this template can be {name_len:,} characters long once "
                f"parameters are filled in; the limit is {MAX_NAME}",
                f"{at}.name",
            )
        if command_len > MAX_COMMAND_BYTES:
            raise loc.error(too_long("the command", command_len), f"{at}.command")
        env_len = 0
        for key, value in job.env.items():
            try:
                value_len = P.longest_fill(value, named) + len(value.encode()) - len(value)
            except P.ParameterError as e:
                raise loc.error(str(e), f"{at}.env.{key}") from None
            env_len += len(key) + value_len + 2
            if len(key.encode()) + 1 + value_len > MAX_ARG_BYTES:
                raise loc.error(
                    f"environment variable {key!r} is longer than {MAX_ARG_BYTES:,} bytes, "
                    "the most execve takes in one string on Linux (MAX_ARG_STRLEN)",
                    f"{at}.env",
                )
        edges += count * sum(dep_counts)
        size += count * (name_len + command_len + dep_len + env_len)
        if edges > MAX_DEPENDENCIES:
            raise loc.error(
                f"the jobs up to here have {edges:,} dependencies; the limit is {MAX_DEPENDENCIES:,}",
                f"{at}.depends_on",
            )
        if size > MAX_EXPANDED_BYTES:
            raise loc.error(
                f"the jobs up to here expand to about {size / 2**20:,.0f} MiB of names, commands, "
                f"dependencies and env; the limit is {MAX_EXPANDED_BYTES // 2**20} MiB",
                at,
            )
        plans.append((named, rest))
    return plans


def _union_deps(depends_on: list[str], values: Values) -> list[str]:
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


def _filled_env(env: dict[str, str], combo: dict[str, P.Scalar]) -> dict[str, str]:
    """The job's environment with its parameters filled in (the spec's own dict where it has none)."""
    if not combo or not any("{" in v for v in env.values()):
        return env
    return {k: P.fill(v, combo) for k, v in env.items()}


class JobExpander:
    """Makes the expanded jobs of a workflow's spec jobs, in order, keeping what the link step
    needs: each name's spec index (for error lines) and the `depends_on_regexes` to match."""

    def __init__(
        self,
        files: dict[str, File],
        data: dict[str, UserData],
        loc: Locator,
        datasets: dict[str, Dataset] | None = None,
    ):
        self.files, self.data, self.loc, self.datasets = files, data, loc, datasets or {}
        self.file_names, self.data_names, self.matcher = list(files), list(data), Matcher(loc)
        self.jobs: list[ExpandedJob] = []
        self.origin: dict[str, int] = {}  # job name -> index in the spec, for error lines
        self.regexes: list[tuple[ExpandedJob, int, list[str]]] = []  # a job, its spec index, its filled regexes
        self.exchanged = 0  # files and user data read or written, over all jobs

    def expand(
        self, j: int, job: JobSpec, named: Values, rest: Values, need: Requirements, scheduler: str | None
    ) -> None:
        """Add the jobs spec job `j` makes: one per combination of the parameters its name uses."""
        try:
            for combo in P.combinations(named, job.parameter_mode == "zip") if named else [{}]:
                self._expand_one(j, job, combo, rest, need, scheduler)
        except P.ParameterError as e:
            raise self.loc.error(str(e), f"$.jobs[{j}]") from None

    def _datasets(
        self, listed: list[str], referenced: list[str], combo: dict[str, P.Scalar], job: str, at: str
    ) -> list[str]:
        """The datasets a job lists (parameters filled in) and names in its command, each one the spec has."""
        if not listed and not referenced:
            return []
        names = list(dict.fromkeys([P.fill(n, combo) for n in listed] + referenced))
        for name in names:
            if name not in self.datasets:
                raise self.loc.error(f"job {job!r} lists dataset {name!r}, and `datasets` has no such dataset", at)
        return names

    def _label(self, job: JobSpec, combo: dict[str, P.Scalar], at: str) -> str | None:
        if job.label is None:
            return None
        label = P.fill(job.label, combo)
        if problem := label_problem(label):
            raise self.loc.error(problem, f"{at}.label")
        return label

    def _expand_one(
        self, j: int, job: JobSpec, combo: dict[str, P.Scalar], rest: Values, need: Requirements, scheduler: str | None
    ) -> None:
        at, loc = f"$.jobs[{j}]", self.loc
        name, command = P.fill(job.name, combo), P.fill(job.command, combo)
        if job.invocation_script:  # a script of several lines ends, then the command starts a line
            script = P.fill(job.invocation_script, combo)
            command = f"{script.rstrip(chr(10))}\n{command}" if "\n" in script else f"{script} {command}"
        refs = _NO_REFERENCES
        if "${" in command:  # `${files.…}` and `${user_data.…}` become paths and names, and dependencies
            command, refs = substitute_references(command, self.files, self.data, name, at, loc, self.datasets)
        used, data_used = self._uses(job, combo, rest, refs, name, at)
        if len(name) > MAX_NAME:
            raise loc.error(
                f"job name {name[:40]!r}... is {len(name):,} characters long; the limit is {MAX_NAME}", f"{at}.name"
            )
        if len(command) * 4 > MAX_COMMAND_BYTES and len(command.encode()) > MAX_COMMAND_BYTES:
            raise loc.error(too_long("the command of job " + repr(name), len(command.encode())), f"{at}.command")
        deps = _union_deps([P.fill(d, combo) for d in job.depends_on or []], rest)
        self.jobs.append(
            ExpandedJob(
                name,
                command,
                deps,
                job.failure_handler,
                need.num_cpus,
                _filled_env(job.env, combo),
                scheduler,
                need.num_gpus,
                need.memory_bytes,
                need.runtime_seconds,
                job.cancel_on_blocking_job_failure,
                used.inputs if used else [],
                used.outputs if used else [],
                data_used.inputs if data_used else [],
                data_used.outputs if data_used else [],
                job.supports_termination,
                template=job.name if combo else P.name_template(name),
                priority=job.priority,
                label=self._label(job, combo, at),
                dataset_inputs=self._datasets(
                    job.input_datasets, refs.datasets.inputs, combo, name, f"{at}.input_datasets"
                ),
                dataset_outputs=self._datasets(
                    job.output_datasets, refs.datasets.outputs, combo, name, f"{at}.output_datasets"
                ),
            )
        )
        self._note_origin(name, j)
        if job.depends_on_regexes:
            self.regexes.append((self.jobs[-1], j, [P.fill(r, combo) for r in job.depends_on_regexes]))

    def _uses(
        self, job: JobSpec, combo: dict[str, P.Scalar], rest: Values, refs: References, name: str, at: str
    ) -> tuple[JobFiles | None, JobFiles | None]:
        """The files and user data one expanded job reads and writes (None: it names none)."""

        def fill(names: list[str]) -> list[str]:
            return [P.fill(n, combo) for n in names]

        def every(names: list[str]) -> list[str]:
            # A listed file or entry templated over what the name does not multiply: every one (fan-in).
            return _union_deps(fill(names), rest)

        used = None
        if (
            job.input_files
            or job.output_files
            or job.input_file_regexes
            or job.output_file_regexes
            or refs.files.inputs
            or refs.files.outputs
        ):
            used = job_uses(
                "file",
                every(job.input_files) + refs.files.inputs,
                every(job.output_files) + refs.files.outputs,
                fill(job.input_file_regexes),
                fill(job.output_file_regexes),
                self.files,
                self.file_names,
                self.matcher,
                name,
                at,
                self.loc,
            )
        data_used = None
        if (
            job.input_user_data
            or job.output_user_data
            or job.input_user_data_regexes
            or job.output_user_data_regexes
            or refs.user_data.inputs
            or refs.user_data.outputs
        ):
            data_used = job_uses(
                "user_data",
                every(job.input_user_data) + refs.user_data.inputs,
                every(job.output_user_data) + refs.user_data.outputs,
                fill(job.input_user_data_regexes),
                fill(job.output_user_data_regexes),
                self.data,
                self.data_names,
                self.matcher,
                name,
                at,
                self.loc,
            )
        for u in (used, data_used):
            if u is not None:
                self.exchanged += len(u.inputs) + len(u.outputs)
        if self.exchanged > MAX_DEPENDENCIES:  # each read can make a dependency
            raise self.loc.error(
                f"the jobs up to here read and write {self.exchanged:,} files and user data; the "
                f"limit is {MAX_DEPENDENCIES:,}",
                at,
            )
        return used, data_used

    def _note_origin(self, name: str, j: int) -> None:
        if name in self.origin:
            first = f" (also made by jobs[{self.origin[name]}])" if self.origin[name] != j else ""
            raise self.loc.error(f"duplicate job name {name!r}{first}", f"$.jobs[{j}].name")
        self.origin[name] = j
