"""Workflow specs written in Python: `WorkflowSpec` builds the same tree of dicts and lists that a
YAML spec reads as, writes it as YAML or JSON, and checks it with the daemon's own parser.

Nothing here decides what a spec means. Values go into the tree as given (deep-copied), and
`validate` / `errors` report what the parser refuses, naming the field. The builder refuses at
the call only what is plainly wrong: a name or command that is not text, a name used twice.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import SafeRepresenter

from torcd.errors import SpecError
from torcd.protocol import MAX_SPEC_BYTES
from torcd.spec.actions import ActionSpec
from torcd.spec.data import DatasetSpec, FileSpec, UserDataSpec
from torcd.spec.errors import spec_errors
from torcd.spec.parse import load_plain, parse_spec
from torcd.spec.schema import ResourceRequirementSpec, Workflow
from torcd.spec.slurm import SlurmSchedulerSpec

# Keys in the order docs/spec.md writes them; keys not listed follow, in the order given.
_TOP_ORDER = (
    "name",
    "description",
    "user",
    "project",
    "metadata",
    "output_dir",
    "use_pending_failed",
    "jobs_sort_method",
    "parameters",
    "resource_requirements",
    "failure_handlers",
    "files",
    "datasets",
    "user_data",
    "slurm_schedulers",
    "default_scheduler",
    "slurm_defaults",
    "resource_monitor",
    "compute_node_wait_for_new_jobs_seconds",
    "compute_node_wait_for_healthy_database_minutes",
    "compute_node_expiration_buffer_seconds",
    "compute_node_min_time_for_new_jobs_seconds",
    "compute_node_ignore_workflow_completion",
    "jobs",
    "actions",
)
_JOB_ORDER = (
    "name",
    "command",
    "invocation_script",
    "parameters",
    "parameter_mode",
    "use_parameters",
    "depends_on",
    "depends_on_regexes",
    "input_files",
    "input_file_regexes",
    "output_files",
    "output_file_regexes",
    "input_user_data",
    "input_user_data_regexes",
    "output_user_data",
    "output_user_data_regexes",
    "input_datasets",
    "output_datasets",
    "failure_handler",
    "resource_requirements",
    "num_cpus",
    "env",
    "scheduler",
    "cancel_on_blocking_job_failure",
    "supports_termination",
)
_RULE_ORDER = (
    "causes",
    "exit_codes",
    "match_all_exit_codes",
    "recovery_script",
    "recovery_timeout",
    "max_retries",
    "runtime_multiplier",
    "memory_multiplier",
)


def _fields_of(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(struct))


_ENTRY_ORDER: dict[str, tuple[str, ...]] = {
    "jobs": _JOB_ORDER,
    "resource_requirements": _fields_of(ResourceRequirementSpec),
    "failure_handlers": ("name", "rules"),
    "files": _fields_of(FileSpec),
    "datasets": _fields_of(DatasetSpec),
    "user_data": _fields_of(UserDataSpec),
    "slurm_schedulers": _fields_of(SlurmSchedulerSpec),
    "actions": _fields_of(ActionSpec),
}
# Lists whose names parameters may expand: two entries `part_{i}` with different values are
# valid, so only names without a placeholder are checked for duplicates here (the parser checks
# the rest after expansion).
_TEMPLATED = frozenset({"jobs", "files", "user_data"})
# Characters YAML reads as line breaks or refuses, which JSON may hold raw: escaped in to_json.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
# Text that YAML 1.1 readers (PyYAML) take for a number or a boolean (`1:4`, `00:10:00`, `on`),
# though YAML 1.2 reads it as text: quoted, so the spec reads the same everywhere.
_YAML11_NOT_TEXT = re.compile(
    r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?|[-+]?0[0-7_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?0b[01_]+"
    r"|[yYnN]|(?:[yY]es|YES|[nN]o|NO|[oO]n|ON|[oO]ff|OFF)"
)


class WorkflowSpec:
    """A workflow spec built in code: each method adds what a YAML spec would say, and returns the
    spec, so calls chain. `to_yaml`, `to_json` and `to_dict` give it back; `validate` checks it."""

    def __init__(
        self,
        name: str,
        *,
        description: str | None = None,
        output_dir: str | None = None,
        use_pending_failed: bool | None = None,
        **settings: Any,
    ) -> None:
        """A spec named `name`. `settings` are any other top-level keys of the spec format
        (`resource_monitor`, `jobs_sort_method`, `project`, `metadata`, ...), as written."""
        self._tree: dict[str, Any] = {"name": _text(name, "the workflow's name")}
        given = {"description": description, "output_dir": output_dir, "use_pending_failed": use_pending_failed}
        self._tree.update({key: value for key, value in given.items() if value is not None})
        self._tree.update(_plain(settings))
        self._names: dict[str, set[str]] = {}

    @property
    def name(self) -> str:
        """The workflow's name ("" if the tree it was made from has none that is text)."""
        name = self._tree.get("name")
        return name if isinstance(name, str) else ""

    def __repr__(self) -> str:
        jobs = self._tree.get("jobs")
        return f"<WorkflowSpec {self.name!r}: {len(jobs) if isinstance(jobs, list) else 0} jobs>"

    def job(
        self,
        name: str,
        command: str,
        *,
        depends_on: str | Sequence[str] | None = None,
        resources: str | Mapping[str, Any] | None = None,
        failure_handler: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> WorkflowSpec:
        """Add a job. `depends_on` takes one name or several; `resources` the name of a
        `resource_requirements` entry, or such an entry's fields inline (`{"num_cpus": 4,
        "memory": "8g"}`), added under the job's name unless an identical entry exists.
        `fields` are any other keys of a job (`env`, `input_files`, `scheduler`, ...), as written."""
        name = _text(name, "a job's name")
        entry: dict[str, Any] = {"name": name, "command": _text(command, f"the command of job {name!r}")}
        self._refuse_duplicate("jobs", name, "job")
        if depends_on is not None:
            entry["depends_on"] = _name_list(depends_on, f"`depends_on` of job {name!r}")
        if failure_handler is not None:
            entry["failure_handler"] = _text(failure_handler, f"the failure handler of job {name!r}")
        if parameters is not None:
            if not isinstance(parameters, Mapping):
                raise TypeError(f"`parameters` of job {name!r} must be a mapping, not {type(parameters).__name__}")
            entry["parameters"] = _plain(parameters)
        if resources is not None and "resource_requirements" in fields:
            raise TypeError(f"job {name!r}: give `resources` or `resource_requirements`, not both")
        entry.update(_plain(fields))
        self._entries("jobs")  # what is already there is a list: checked before anything is added
        if resources is not None:
            entry["resource_requirements"] = self._requirement_for(name, resources)
        self._append("jobs", entry)
        return self

    def failure_handler(self, name: str, rules: Sequence[Mapping[str, Any]]) -> WorkflowSpec:
        """Add a failure handler: its rules, each a mapping as the spec writes it
        (`{"exit_codes": [10], "recovery_script": "./fix.sh", "max_retries": 3}`)."""
        name = _text(name, "a failure handler's name")
        if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
            raise TypeError(f"the rules of failure handler {name!r} must be a list of mappings")
        if not rules:
            raise ValueError(f"failure handler {name!r} needs at least one rule")
        for i, rule in enumerate(rules):
            if not isinstance(rule, Mapping):
                raise TypeError(f"rule {i} of failure handler {name!r} must be a mapping, not {type(rule).__name__}")
        return self._add_named("failure_handlers", "failure handler", name, {"rules": rules})

    def resource_requirements(self, name: str, **fields: Any) -> WorkflowSpec:
        """Add a named resource requirement (`num_cpus`, `num_gpus`, `num_nodes`, `memory`,
        `runtime`) that jobs name in `resources`."""
        return self._add_named("resource_requirements", "resource requirement", name, fields)

    def file(self, name: str, path: str | os.PathLike[str], **fields: Any) -> WorkflowSpec:
        """Add a file that jobs read or write (`input_files`, `output_files`, `${files.input.NAME}`);
        `fields`: `parameters`, `parameter_mode`, `use_parameters`."""
        name = _text(name, "a file's name")
        return self._add_named("files", "file", name, {"path": _text(path, f"the path of file {name!r}"), **fields})

    def dataset(self, name: str, path: str | os.PathLike[str], **fields: Any) -> WorkflowSpec:
        """Add a dataset: a directory several jobs write and others read whole (`input_datasets`,
        `output_datasets`, `${datasets.input.NAME}`); `fields`: `hash_mode`, `description`."""
        name = _text(name, "a dataset's name")
        return self._add_named(
            "datasets", "dataset", name, {"path": _text(path, f"the path of dataset {name!r}"), **fields}
        )

    def user_data(self, name: str, data: Any = None, **fields: Any) -> WorkflowSpec:
        """Add a user data entry holding `data` (any JSON value); `fields`: `is_ephemeral`,
        `parameters`, ..."""
        given = {"data": data} if data is not None else {}  # no data is null, as the spec's default
        return self._add_named("user_data", "user data entry", name, {**given, **fields})

    def slurm_scheduler(self, name: str, **fields: Any) -> WorkflowSpec:
        """Add a Slurm scheduler (`account`, `partition`, `walltime`, `nodes`, `mem`, ...)."""
        return self._add_named("slurm_schedulers", "Slurm scheduler", name, fields)

    def action(self, **fields: Any) -> WorkflowSpec:
        """Add an action (`trigger_type`, `action_type`, `commands`, `jobs`, `scheduler`, ...)."""
        self._append("actions", _plain(fields))
        return self

    def to_dict(self) -> dict[str, Any]:
        """The spec as the plain tree a YAML spec reads as: a deep copy, keys in the docs' order."""
        out: dict[str, Any] = _ordered(_plain(self._tree), _TOP_ORDER)
        for key, order in _ENTRY_ORDER.items():
            if isinstance(out.get(key), list):
                out[key] = [_ordered(entry, order) for entry in out[key]]
        handlers = out.get("failure_handlers")
        for handler in handlers if isinstance(handlers, list) else []:
            if isinstance(handler, dict) and isinstance(handler.get("rules"), list):
                handler["rules"] = [_ordered(rule, _RULE_ORDER) for rule in handler["rules"]]
        return out

    def to_yaml(self) -> str:
        """The spec as YAML, in block style (text of several lines as `|` blocks)."""
        out = io.StringIO()
        _yaml_dumper().dump(self.to_dict(), out)
        return out.getvalue()

    def to_json(self) -> str:
        """The spec as JSON (which the daemon reads as YAML, or as JSON5)."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
        return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n"

    def validate(self) -> Workflow:
        """Check the spec with the daemon's parser and return the workflow it makes; raise
        SpecError at the first error, naming the field (`$.jobs[2].failure_handler`)."""
        return parse_spec(self.to_yaml(), self._label(), "yaml")

    def errors(self) -> list[SpecError]:
        """Every error of the spec at once (as `torcctl validate` reports them); empty if valid."""
        return spec_errors(self.to_yaml(), self._label(), "yaml")

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the spec to a file: JSON when its name ends in `.json` or `.json5`, else YAML."""
        suffix = os.fspath(path).lower().rpartition(".")[2]
        if suffix == "kdl":
            raise ValueError(f"cannot write KDL ({os.fspath(path)}): name the file .yaml or .json")
        text = self.to_json() if suffix in ("json", "json5") else self.to_yaml()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], spec_format: str | None = None) -> WorkflowSpec:
        """Read a spec in any format the daemon reads (YAML, JSON, JSON5, KDL; by the file's
        extension unless `spec_format` says). A file that cannot be read raises SpecError naming
        it and the line; the spec itself is checked only by `validate`."""
        file = os.fspath(path)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_SPEC_BYTES + 1)  # a spec pointed at /dev/zero must not fill memory
        except OSError as e:
            raise SpecError(f"cannot read the spec: {e.strerror or e}", file=file) from None
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(f"the spec is larger than {MAX_SPEC_BYTES // 2**20} MiB", file=file)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise SpecError(f"the spec is not UTF-8 text ({e.reason})", file=file, line=line) from None
        # Newlines as torcctl reads a spec (universal newlines), so the spec reads the same here.
        return cls.from_text(text.replace("\r\n", "\n").replace("\r", "\n"), file, spec_format)

    @classmethod
    def from_text(cls, text: str, file: str = "<spec>", spec_format: str | None = None) -> WorkflowSpec:
        """Read a spec's text (YAML unless `spec_format`, or `file`'s extension, says otherwise);
        SpecError naming `file` and the line if it does not read as a spec."""
        tree, _ = load_plain(text, file, spec_format)
        return cls.from_dict(tree)

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> WorkflowSpec:
        """A spec holding this tree (as `to_dict` gives), copied as written; `validate` checks it."""
        if not isinstance(tree, Mapping):
            raise TypeError(f"a spec is a mapping, not {type(tree).__name__}")
        spec = cls.__new__(cls)
        spec._tree, spec._names = _plain(tree), {}
        return spec

    def _label(self) -> str:
        return f"<{self.name or 'spec'}>"

    def _add_named(self, key: str, what: str, name: str, fields: Mapping[str, Any]) -> WorkflowSpec:
        name = _text(name, f"a {what}'s name")
        self._refuse_duplicate(key, name, what)
        self._append(key, {"name": name, **_plain(fields)})
        return self

    def _refuse_duplicate(self, key: str, name: str, what: str) -> None:
        if (key not in _TEMPLATED or "{" not in name) and name in self._names_of(key):
            raise ValueError(f"{what} {name!r} is already defined")

    def _requirement_for(self, job: str, resources: str | Mapping[str, Any]) -> str:
        """The name of the resource_requirements entry for these resources, added if new."""
        if isinstance(resources, str):
            return _text(resources, f"the resources of job {job!r}")
        if not isinstance(resources, Mapping):
            raise TypeError(f"`resources` of job {job!r} must be a name or a mapping, not {type(resources).__name__}")
        fields = _plain(resources)
        if "name" in fields:
            raise ValueError(
                f"inline `resources` of job {job!r} take no `name`: give the name of an entry made by "
                "resource_requirements() instead"
            )
        for entry in self._entries("resource_requirements"):
            named = isinstance(entry, dict) and isinstance(entry.get("name"), str)
            if named and _same({k: v for k, v in entry.items() if k != "name"}, fields):
                return str(entry["name"])
        taken, chosen, n = self._names_of("resource_requirements"), job, 1
        while chosen in taken:
            n += 1
            chosen = f"{job}_{n}"
        self._append("resource_requirements", {"name": chosen, **fields})
        return chosen

    def _entries(self, key: str) -> list[Any]:
        entries = self._tree.setdefault(key, [])
        if not isinstance(entries, list):
            raise TypeError(f"the spec's `{key}` is {type(entries).__name__}, not a list: cannot add to it")
        return entries

    def _names_of(self, key: str) -> set[str]:
        if key not in self._names:
            entries = self._tree.get(key)
            items = entries if isinstance(entries, list) else []
            self._names[key] = {e["name"] for e in items if isinstance(e, dict) and isinstance(e.get("name"), str)}
        return self._names[key]

    def _append(self, key: str, entry: dict[str, Any]) -> None:
        names = self._names_of(key)
        self._entries(key).append(entry)
        if isinstance(entry.get("name"), str):
            names.add(entry["name"])


def _text(value: Any, what: str) -> str:
    """`value` as a name or command: text (or a path), not empty."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} is empty")
    return str.__str__(value)


def _name_list(value: str | Sequence[str], what: str) -> list[str]:
    if isinstance(value, str):
        return [_text(value, what)]
    if isinstance(value, bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{what} must be a name or a list of names, not {type(value).__name__}")
    return [_text(item, f"{what}[{i}]") for i, item in enumerate(value)]


def _plain(value: Any) -> Any:
    """A deep copy in the spec's builtins: mappings become dicts, tuples lists, a str subclass
    (an enum's value) a str, a path its text."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind.__str__(value) if kind is str else kind(value)
    return copy.deepcopy(value)


def _ordered(entry: Any, order: tuple[str, ...]) -> Any:
    if not isinstance(entry, dict):
        return entry
    out = {key: entry[key] for key in order if key in entry}
    out.update((key, value) for key, value in entry.items() if key not in out)
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1, 1.0 and True are three different values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


class _SpecRepresenter(SafeRepresenter):
    """Text of several lines as a `|` block, null as `null`: a spec as a person would write it."""

    def represent_str(self, data: str) -> ScalarNode:
        if _YAML_UNSAFE.search(data):
            style: str | None = '"'  # escaped: raw, the reader would take them for line breaks or refuse them
        elif "\n" in data:
            style = "|"
        else:
            style = "'" if _YAML11_NOT_TEXT.fullmatch(data) else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    def represent_none(self, data: None) -> ScalarNode:
        return self.represent_scalar("tag:yaml.org,2002:null", "null")


_SpecRepresenter.add_representer(str, _SpecRepresenter.represent_str)
_SpecRepresenter.add_representer(type(None), _SpecRepresenter.represent_none)


def _yaml_dumper() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.Representer = _SpecRepresenter
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)  # list items indented under their key
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 1 << 20  # no folding of long commands
    return yaml
