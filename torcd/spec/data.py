"""What jobs hand each other, as dependencies: files (Torc's `files`, `input_files`,
`output_files`, `${files.input.NAME}`) and user data (`user_data`, `input_user_data`,
`output_user_data`, `${user_data.input.NAME}`).

A job that writes a file (or user data) runs before every job that reads it; a file no job
writes must exist when the workflow is submitted. What is decided here is pure: names, paths
and the edges they make. Whether an input exists is asked by `missing_inputs`, at submission.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol

import msgspec
import regex
from msgspec import Meta

from torcd.core import params as P
from torcd.core.spawning import LINEAGE_RECORD_PREFIX
from torcd.protocol import MAX_USER_DATA_BYTES, MAX_USER_DATA_ENTRIES

Name = Annotated[str, Meta(min_length=1, max_length=512)]
Path = Annotated[str, Meta(min_length=1, max_length=4096)]
Pattern = Annotated[str, Meta(min_length=1, max_length=1024)]
ParamValue = str | int | float | list[str | int | float]
MAX_FILES = 2_000_000
MAX_BYTES = 128 * 2**20  # of names, paths and values in `files`, and again in `user_data`
MAX_REGEX_TESTS = 50_000_000  # names tested against all of a spec's regexes together
REGEX_SECONDS = 10.0  # for all of them: a pattern that backtracks without end is an error, not a hang
# A Torc-style reference in a command: `${`, a shell name, then a dot (never valid bash), up to
# the next `}`. `${HOME}`, `${x:-a.b}`, `${#a[@]}` stay the shell's.
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\.[^}]*\}?")
# Those torc-py knows: `${files.input.NAME}` becomes the file's path, `${user_data.input.NAME}`
# the entry's name (what `torcctl user-data get|set` take), each a dependency like a listed one.
_KNOWN_REFERENCE = re.compile(r"\$\{(files|user_data|datasets)\.(input|output)\.([^{}]+)\}")
_SHOWN = 80  # characters of an unknown reference quoted in the error


class Locator(Protocol):
    def error(self, message: str, field: str) -> Exception: ...


class FileSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    path: Path
    parameters: dict[str, ParamValue] = {}
    parameter_mode: Literal["product", "zip"] = "product"
    use_parameters: list[str] | None = None
    st_mtime: float | None = None  # Torc's record of when it last changed: accepted, not used


class DatasetSpec(msgspec.Struct, forbid_unknown_fields=True):
    """Torc's `datasets`: a directory that jobs write (several may) and read as one."""

    name: Name
    path: Path
    hash_mode: Literal["manifest", "content", "none"] = "manifest"
    description: str = ""


class Dataset(msgspec.Struct, array_like=True, frozen=True):
    name: str
    path: str  # as written (relative to the directory the workflow was submitted from)
    hash_mode: str
    description: str
    index: int  # of its entry in `datasets`, for error lines


class UserDataSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    data: Any = None  # any JSON value; jobs replace it with `torcctl user-data set`
    is_ephemeral: bool = False  # cleared when the workflow is reset to run again
    parameters: dict[str, ParamValue] = {}
    parameter_mode: Literal["product", "zip"] = "product"
    use_parameters: list[str] | None = None


class UserData(msgspec.Struct, array_like=True, frozen=True):
    name: str
    data: Any
    is_ephemeral: bool
    index: int


class File(msgspec.Struct, array_like=True, frozen=True):
    name: str
    path: str  # as written (relative to the directory the workflow was submitted from)
    index: int  # of its entry in `files`, for error lines


class Matcher:
    """Regexes against names, each pattern compiled and searched once, within a budget of
    tests and of time (Torc's regexes are unanchored: found anywhere in the name)."""

    def __init__(self, loc: Locator):
        self.loc, self.tests, self.found = loc, 0, dict[tuple[str, int], list[str]]()
        self.spent = 0.0  # seconds searching so far: the budget counts only that

    def search(self, pattern: str, names: Sequence[str], at: str) -> list[str]:
        key = (pattern, id(names))
        if key in self.found:
            return self.found[key]
        self.tests += len(names)
        if self.tests > MAX_REGEX_TESTS:
            raise self.loc.error(
                f"the spec's regexes would test names {MAX_REGEX_TESTS:,} times or more; list "
                "names with parameters for large sweeps",
                at,
            )
        began = time.monotonic()
        deadline = began + REGEX_SECONDS - self.spent
        try:
            compiled = regex.compile(pattern, regex.V0)
            out = [n for n in names if compiled.search(n, timeout=max(0.0, deadline - time.monotonic()))]
        except regex.error as e:
            raise self.loc.error(f"bad regular expression {pattern!r}: {e}", at) from None
        except TimeoutError:
            raise self.loc.error(
                f"regular expression {pattern!r} takes too long to match names "
                f"(over {REGEX_SECONDS:.0f} s with the others)",
                at,
            ) from None
        finally:
            self.spent += time.monotonic() - began
        self.found[key] = out
        return out


def expand_files(specs: list[FileSpec], workflow_params: dict[str, ParamValue], loc: Locator) -> dict[str, File]:
    """Each file entry, its parameters filled in (product or zip), by name."""

    def make(spec: FileSpec, combo: dict, i: int) -> tuple[File, int]:
        f = File(P.fill(spec.name, combo), P.fill(spec.path, combo), i)
        return f, len(f.name) + len(f.path)

    return _expand("files", specs, workflow_params, loc, make, MAX_FILES)


def expand_user_data(
    specs: list[UserDataSpec], workflow_params: dict[str, ParamValue], loc: Locator
) -> dict[str, UserData]:
    """Each user data entry, its parameters filled in its name and the strings of its data."""

    def make(spec: UserDataSpec, combo: dict, i: int) -> tuple[UserData, int]:
        d = UserData(P.fill(spec.name, combo), _fill_data(spec.data, combo), spec.is_ephemeral, i)
        if d.name.startswith(LINEAGE_RECORD_PREFIX):
            raise loc.error(
                f"user data named {LINEAGE_RECORD_PREFIX}... is a lineage's record, written by jobs.spawn only",
                f"$.user_data[{i}].name",
            )
        size = len(msgspec.json.encode(d.data))
        if size > MAX_USER_DATA_BYTES:
            raise loc.error(
                f"user data {d.name!r} is {size:,} bytes as JSON; the limit is {MAX_USER_DATA_BYTES:,}",
                f"$.user_data[{i}].data",
            )
        return d, len(d.name) + 2 * size  # stored twice: the value and the spec's, for a reset

    return _expand("user_data", specs, workflow_params, loc, make, MAX_USER_DATA_ENTRIES)


def merged_parameters(
    workflow_params: dict[str, ParamValue], use: list[str] | None, own: dict[str, ParamValue], at: str, loc: Locator
) -> dict[str, ParamValue]:
    """A job's (or a file's, or user data's) parameters: the workflow's it names in
    `use_parameters`, then its own."""
    raw: dict[str, ParamValue] = {}
    for k, name in enumerate(use or []):
        if name not in workflow_params:
            raise loc.error(f"no workflow parameter named {name!r}", f"{at}.use_parameters[{k}]")
        raw[name] = workflow_params[name]
    raw.update(own)
    return raw


def _fill_data(data: Any, combo: dict) -> Any:
    if isinstance(data, str):
        return P.fill(data, combo)
    if isinstance(data, list):
        return [_fill_data(v, combo) for v in data]
    if isinstance(data, dict):
        return {k: _fill_data(v, combo) for k, v in data.items()}
    return data


def _expand(key: str, specs: list, workflow_params: dict[str, ParamValue], loc: Locator, make, most: int) -> dict:
    out: dict[str, Any] = {}
    size = 0
    what = "file" if key == "files" else "user data"
    for i, spec in enumerate(specs):
        at = f"$.{key}[{i}]"
        raw = merged_parameters(workflow_params, spec.use_parameters, spec.parameters, at, loc)
        try:
            values = {name: P.parse_values(v, max_values=most) for name, v in raw.items()}
            zipped = spec.parameter_mode == "zip"
            if P.product_size(values, zipped) + len(out) > most:
                raise loc.error(f"`{key}` expands to more than {most:,} entries", f"{at}.parameters")
            for combo in P.combinations(values, zipped) if values else [{}]:
                item, bytes_ = make(spec, combo, i)
                size += bytes_
                if size > MAX_BYTES:
                    raise loc.error(f"`{key}` up to here expands to more than {MAX_BYTES // 2**20} MiB", at)
                if item.name in out:
                    first = out[item.name].index
                    raise loc.error(
                        f"duplicate {what} name {item.name!r}"
                        + (f" (also made by {key}[{first}])" if first != i else ""),
                        f"{at}.name",
                    )
                out[item.name] = item
        except P.ParameterError as e:
            raise loc.error(f"{what} {spec.name!r}: {e}", f"{at}.parameters") from None
    return out


class JobFiles(msgspec.Struct):
    """What one job reads and writes, by name."""

    inputs: list[str]
    outputs: list[str]


class References(msgspec.Struct):
    """What a command's `${files.…}`, `${user_data.…}` and `${datasets.…}` name, by role."""

    files: JobFiles
    user_data: JobFiles
    datasets: JobFiles = msgspec.field(default_factory=lambda: JobFiles([], []))


def substitute_references(
    command: str,
    files: dict[str, File],
    data: dict[str, UserData],
    job: str,
    at: str,
    loc: Locator,
    datasets: Mapping[str, Dataset] | None = None,
) -> tuple[str, References]:
    """The command with each `${files.input|output.NAME}` (and `${datasets.…}`) replaced by the
    path and each `${user_data.input|output.NAME}` by the entry's name, shell-quoted for where it
    stands (one word, never more shell), and the names it read and wrote; any other dotted
    reference is an error."""
    found: dict[str, dict[str, dict[str, None]]] = {
        "files": {"input": {}, "output": {}},
        "user_data": {"input": {}, "output": {}},
        "datasets": {"input": {}, "output": {}},
    }
    datasets = datasets or {}
    scanned: list[Any] = [0, ""]  # how far the command's quotes are known, and the quote open there

    def substitute(m: re.Match[str]) -> str:
        scanned[1] = open_quote(command, scanned[0], m.start(), scanned[1])
        scanned[0] = m.start()
        known = _KNOWN_REFERENCE.fullmatch(m[0])
        if known is None:
            if scanned[1] == "'" or _escaped(command, m.start()):
                return m[0]  # the shell takes it as it is (mvn's '${project.version}', awk, JavaScript)
            shown = m[0] if len(m[0]) <= _SHOWN else m[0][:_SHOWN] + "…"
            raise loc.error(
                f"unknown reference `{shown}` in job {job!r}: torc-py knows "
                "${files.input|output.NAME}, ${datasets.input|output.NAME} and ${user_data.input|output.NAME} "
                "(to pass `${a.b}` to a "
                "program as it is, put it in single quotes or write \\${a.b})",
                f"{at}.command",
            )
        kind, role, name = known[1], known[2], known[3]
        entries: Mapping[str, Any] = files if kind == "files" else data if kind == "user_data" else datasets
        if name not in entries:
            noun = {"files": "file", "user_data": "user data", "datasets": "dataset"}[kind]
            raise loc.error(
                f"job {job!r} names {noun} {name!r} in `{m[0]}`, and `{kind}` has no such {noun}", f"{at}.command"
            )
        found[kind][role][name] = None
        scanned[0] = m.end()  # a name may hold quotes: they are the name's, not the shell's
        # `data/$(touch x).csv` must name a file, not run `touch`, inside the user's quotes or not.
        return quoted_for(name if kind == "user_data" else entries[name].path, scanned[1])

    substituted = _REFERENCE.sub(substitute, command)
    f, d, s = found["files"], found["user_data"], found["datasets"]
    return substituted, References(
        JobFiles(list(f["input"]), list(f["output"])),
        JobFiles(list(d["input"]), list(d["output"])),
        JobFiles(list(s["input"]), list(s["output"])),
    )


def _escaped(text: str, at: int) -> bool:
    """Whether the character at `at` follows an odd number of backslashes (taken literally)."""
    run = len(text[:at]) - len(text[:at].rstrip("\\"))
    return run % 2 == 1


def open_quote(text: str, start: int, end: int, quote: str) -> str:
    """The shell quote open at `end` (' or " or none) given the one open at `start`: quotes and
    backslashes as the shell reads them outside here-documents and nested substitutions."""
    i = start
    while i < end:
        c = text[i]
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            i += 1  # the next character is taken as it is
        elif quote == '"':
            quote = "" if c == '"' else quote
        elif c in "'\"":
            quote = c
        i += 1
    return quote


def quoted_for(path: str, quote: str) -> str:
    """`path` (or a user data name) as exactly one literal word where it stands: bare, inside
    '...', or inside "..."."""
    if quote == "'":
        return path.replace("'", "'\\''")
    if quote == '"':
        return re.sub(r'([\\"$`])', r"\\\1", path)
    return shlex.quote(path)


def job_uses(
    what: str,
    inputs: list[str],
    outputs: list[str],
    input_regexes: list[str],
    output_regexes: list[str],
    known: dict,
    names: list[str],
    matcher: Matcher,
    job: str,
    at: str,
    loc: Locator,
) -> JobFiles:
    """The names a job reads and writes (`what`: file or user_data): those it lists and those
    its regexes match, each one known."""
    seen = {"input": dict.fromkeys(inputs), "output": dict.fromkeys(outputs)}
    plural = "files" if what == "file" else what
    for role, patterns in (("input", input_regexes), ("output", output_regexes)):
        for k, pattern in enumerate(patterns):
            field = f"{at}.{role}_{what}_regexes[{k}]"
            matched = matcher.search(pattern, names, field)
            if not matched:
                raise loc.error(f"{role}_{what}_regexes entry {pattern!r} of job {job!r} matches no {what}", field)
            seen[role].update(dict.fromkeys(matched))
    for role in ("input", "output"):
        for name in seen[role]:
            if name not in known:
                noun = what.replace("_", " ")
                raise loc.error(
                    f"job {job!r} lists {role} {noun} {name!r}, and `{plural}` has no such {noun}",
                    f"{at}.{role}_{plural}",
                )
    return JobFiles(list(seen["input"]), list(seen["output"]))


def producer_edges(
    jobs: Sequence[tuple[str, JobFiles]], spec_index: dict[str, int], what: str, loc: Locator
) -> tuple[dict[str, list[str]], dict[tuple[str, str], str]]:
    """Each job's producers (the jobs that write what it reads), and for each such edge the
    name that makes it; a name written by two jobs is an error."""
    producer: dict[str, str] = {}
    plural = "files" if what == "file" else what
    for name, f in jobs:
        for out in f.outputs:
            if out in producer and producer[out] != name:
                raise loc.error(
                    f"{what.replace('_', ' ')} {out!r} is written by two jobs, {producer[out]!r} and "
                    f"{name!r}; one job must own each output",
                    f"$.jobs[{spec_index[name]}].output_{plural}",
                )
            producer[out] = name
    deps: dict[str, list[str]] = {}
    via: dict[tuple[str, str], str] = {}
    for name, f in jobs:
        for inp in f.inputs:
            source = producer.get(inp)
            if source is not None and source != name:
                deps.setdefault(name, []).append(source)
                via.setdefault((name, source), inp)
    return deps, via


def missing_inputs(files: Mapping[str, File | Dataset], inputs: Sequence[str], cwd: str) -> list[File | Dataset]:
    """Files (or datasets) read but written by no job that do not exist (paths relative to cwd)."""
    return [files[name] for name in inputs if not os.path.exists(os.path.join(cwd, files[name].path))]


def dataset_edges(
    jobs: Sequence[tuple[str, JobFiles]], spec_index: dict[str, int], limit: int, loc: Locator
) -> tuple[dict[str, list[str]], dict[tuple[str, str], str]]:
    """Each job's producers through datasets: every job that writes a dataset it reads (a
    dataset may have several writers, Torc's fan-in), and for each edge the dataset that makes
    it; more than `limit` edges (writers times readers, counted before any is made) is an error."""
    writers: dict[str, list[str]] = {}
    for name, d in jobs:
        for out in d.outputs:
            writers.setdefault(out, []).append(name)
    edges = 0
    for name, d in jobs:
        edges += sum(len(writers.get(inp, ())) for inp in d.inputs)
        if edges > limit:
            raise loc.error(
                f"datasets make more than {limit:,} dependencies (every reader waits for every writer): "
                "split a dataset that many jobs write and many read, or put a job between them",
                f"$.jobs[{spec_index[name]}].input_datasets",
            )
    deps: dict[str, list[str]] = {}
    via: dict[tuple[str, str], str] = {}
    for name, d in jobs:
        for inp in d.inputs:
            for source in writers.get(inp, ()):
                if source != name:
                    deps.setdefault(name, []).append(source)
                    via.setdefault((name, source), inp)
    return deps, via


def dataset_mtimes(cwd: str, paths: Mapping[str, str], read: Collection[str]) -> dict[str, float | None]:
    """For each dataset a job reads, its newest modification time (`newest_in_tree`); for the
    others (only written: whether they are there is all that matters), their own; None: gone."""
    out: dict[str, float | None] = {}
    for name, path in paths.items():
        full = os.path.join(cwd, path)
        if name in read:
            out[name] = newest_in_tree(full)
            continue
        try:
            out[name] = os.stat(full).st_mtime
        except (OSError, ValueError):
            out[name] = None
    return out


def newest_in_tree(path: str, limit: int = 1_000_000) -> float | None:
    """The latest modification time of a directory, of what is in it and of what is below (a
    file added, changed or removed anywhere moves it); a file's own; None where it is gone.
    Symlinks are not followed below the top. What cannot be told (a directory that cannot be
    read, more than `limit` entries) is infinitely new: a job that reads it runs again rather
    than keep a result from data nobody looked at."""
    try:
        newest = os.stat(path).st_mtime
    except (OSError, ValueError):
        return None
    unread: list[OSError] = []
    seen = 0
    for top, dirs, names in os.walk(path, onerror=unread.append):
        for n in (*dirs, *names):
            seen += 1
            if seen > limit:
                return math.inf
            try:
                newest = max(newest, os.lstat(os.path.join(top, n)).st_mtime)
            except OSError:
                return math.inf
    return math.inf if unread else newest


def file_mtimes(cwd: str, paths: Mapping[str, str]) -> dict[str, float | None]:
    """Each file's modification time (through a symlink, as Make reads it), None where it is
    gone or cannot be looked at."""
    out: dict[str, float | None] = {}
    for name, path in paths.items():
        try:
            out[name] = os.stat(os.path.join(cwd, path)).st_mtime
        except (OSError, ValueError):
            out[name] = None
    return out
