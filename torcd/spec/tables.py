"""Parameter tables (Torc's `parameters_file`, `use_parameters_file`): a CSV, JSON or JSON Lines
file whose rows are the exact combinations of a sweep. Each row makes one job (or file, or user
data), its columns are the parameters: the table becomes `parameters` of one list per column
with `parameter_mode: zip`, before the spec is read further.

Where a table may be named (Torc's rules): the workflow's `parameters_file` is used by the
entries that say `use_parameters_file: true`; a job, file or user data may name its own. A table
excludes `parameters`, `parameter_mode` and `use_parameters` on the same entry, and the
workflow's excludes the workflow's `parameters`. A relative path is from the directory the
spec is submitted (or validated) from, as in Torc.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from collections.abc import Callable
from typing import Any

from torcd.core import params as P
from torcd.errors import SpecError
from torcd.spec.plain import text_problem

MAX_TABLE_BYTES = 64 * 2**20
MAX_ROWS = 2_000_000
MAX_COLUMNS = 1_000
_SECTIONS = ("jobs", "files", "user_data")
_EXCLUDED = ("parameters", "parameter_mode", "use_parameters")
_INTEGER = re.compile(r"[-+]?[0-9]+")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")

Error = Callable[[str, str], Exception]
Read = Callable[[str], bytes]


class TableError(Exception):
    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message, self.line = message, line


def apply_tables(tree: dict, error: Error, read: Read, fill_path: Callable[[str, str], str]) -> dict:
    """The tree with every parameter table read into `parameters` (a new tree where there is one;
    `tree` is not changed). `fill_path(path, field)` fills the variables a path refers to."""
    workflow_table = tree.get("parameters_file")
    uses = [
        (section, i)
        for section in _SECTIONS
        for i, entry in enumerate(tree.get(section) or [])
        if isinstance(entry, dict) and ("parameters_file" in entry or "use_parameters_file" in entry)
    ]
    if workflow_table is None and not uses:
        return tree
    tables: dict[str, dict[str, list]] = {}

    def table(path: Any, field: str) -> dict[str, list]:
        if not isinstance(path, str) or not path:
            raise error("`parameters_file` must be the path of a .csv, .json or .jsonl file", field)
        path = fill_path(path, field)
        if path not in tables:
            tables[path] = read_table(path, read, field, error)
        return tables[path]

    out = {k: v for k, v in tree.items() if k != "parameters_file"}

    def put(section: str, i: int, entry: dict) -> None:
        if out[section] is tree[section]:
            out[section] = list(tree[section])
        out[section][i] = entry

    if workflow_table is not None and tree.get("parameters"):
        raise error("give the workflow either `parameters` or `parameters_file`, not both", "$.parameters_file")
    shared = None if workflow_table is None else table(workflow_table, "$.parameters_file")
    for section, i in uses:
        entry, at = dict(tree[section][i]), f"$.{section}[{i}]"
        own, use = entry.pop("parameters_file", None), entry.pop("use_parameters_file", False)
        if not isinstance(use, bool):
            raise error("`use_parameters_file` is true or false", f"{at}.use_parameters_file")
        if own is not None and use:
            raise error("give either `parameters_file` or `use_parameters_file: true`, not both", at)
        if use and shared is None:
            raise error(
                "`use_parameters_file: true` needs the workflow's `parameters_file`", f"{at}.use_parameters_file"
            )
        if own is None and not use:
            put(section, i, entry)
            continue
        for key in _EXCLUDED:
            if key in entry:
                raise error(f"a parameter table excludes `{key}`: each row is one combination", f"{at}.{key}")
        values = table(own, f"{at}.parameters_file") if own is not None else shared
        entry["parameters"], entry["parameter_mode"] = values, "zip"
        put(section, i, entry)
    return out


def read_table(path: str, read: Read, field: str, error: Error) -> dict[str, list]:
    """The table at `path` as a list of values per column; SpecError naming the table's line."""
    kind = os.path.splitext(path)[1].lower()
    if kind not in (".csv", ".json", ".jsonl", ".ndjson"):
        raise error(f"parameter table {path!r} is not .csv, .json, .jsonl or .ndjson", field)
    try:
        data = read(path)
    except OSError as e:
        raise error(f"cannot read parameter table {path!r}: {e.strerror or e}", field) from None
    except TableError as e:
        raise error(f"parameter table {path!r}: {e.message}", field) from None
    try:
        text = data.decode().removeprefix("\ufeff")  # a byte-order mark (Excel's "CSV UTF-8") is no text
        if "\0" in text:
            raise TableError("it holds a NUL byte", text.count("\n", 0, text.index("\0")) + 1)
        columns = _csv(text) if kind == ".csv" else _json(text) if kind == ".json" else _json_lines(text)
    except UnicodeDecodeError as e:
        raise error(f"parameter table {path!r} is not UTF-8 text (byte {e.start})", field) from None
    except TableError as e:
        raise SpecError(f"{e.message} (the parameter table of {field})", file=path, line=e.line) from None
    return columns


def read_file(cwd: str | None) -> Read:
    """A reader of tables relative to `cwd` (the process's own when None): a regular file of at
    most MAX_TABLE_BYTES, opened without blocking (a FIFO, a device: refused, never waited on)."""

    def read(path: str) -> bytes:
        full = os.path.join(cwd or os.getcwd(), path)
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise TableError("it is not a regular file")
            if st.st_size > MAX_TABLE_BYTES:
                raise TableError(f"it is {st.st_size:,} bytes; the limit is {MAX_TABLE_BYTES:,}")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_TABLE_BYTES + 1)
            if len(data) > MAX_TABLE_BYTES:
                raise TableError(f"it is over {MAX_TABLE_BYTES:,} bytes")
            return data
        finally:
            os.close(fd)

    return read


def _csv(text: str) -> dict[str, list]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # a quoted cell may hold a line break
    try:
        header = next(reader, None)
        if not header:
            raise TableError("it has no header row: the first line names the columns", 1)
        names = _names(header, 1)
        columns: list[list] = [[] for _ in names]
        rows = 0
        for cells in reader:
            if not cells:
                continue  # a blank line
            if len(cells) != len(names):
                raise TableError(f"the row has {len(cells)} cells; the header has {len(names)}", reader.line_num)
            for column, cell in zip(columns, cells):
                column.append(_checked(cell_value(cell), reader.line_num))
            rows += 1
            if rows > MAX_ROWS:
                raise TableError(f"it has over {MAX_ROWS:,} rows", reader.line_num)
    except csv.Error as e:
        raise TableError(f"cannot read CSV: {e}", reader.line_num) from None
    if not rows:
        raise TableError("it has a header and no rows", 1)
    return dict(zip(names, columns))


def cell_value(cell: str) -> P.Scalar:
    """A CSV cell as Torc infers it: an integer, else a number, else text (a number too long for
    Python's int() stays text)."""
    try:
        if _INTEGER.fullmatch(cell):
            return int(cell)
        if _NUMBER.fullmatch(cell):
            return float(cell)
    except ValueError:
        pass
    return cell


def _checked(value: P.Scalar, line: int) -> P.Scalar:
    """A cell becomes part of names, commands and paths: no control characters, as in a spec."""
    if isinstance(value, str) and (problem := text_problem(value, "")):
        raise TableError(problem.replace("`a value`", "a cell"), line)
    return value


def _names(header: list, line: int) -> list[str]:
    if not header:
        raise TableError("a row has no columns", line)
    if len(header) > MAX_COLUMNS:
        raise TableError(f"it has {len(header):,} columns; the limit is {MAX_COLUMNS:,}", line)
    for name in header:
        if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
            raise TableError(f"column {name!r} is not a parameter name (letters, digits and `_`)", line)
    if len(set(header)) != len(header):
        twice = next(n for n in header if header.count(n) > 1)
        raise TableError(f"column {twice!r} is given twice", line)
    return header


def _json(text: str) -> dict[str, list]:
    """A JSON array of objects, each object's line kept for errors."""
    decoder = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_unique)
    at = _skip(text, 0)
    if not text.startswith("[", at):
        raise TableError("a JSON table is an array of objects, one per row", _line(text, at))
    rows: list[tuple[Any, int]] = []
    at = _skip(text, at + 1)
    while not text.startswith("]", at):
        if rows:
            if not text.startswith(",", at):
                raise TableError("expected `,` or `]` after a row", _line(text, at))
            at = _skip(text, at + 1)
        try:
            row, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as e:
            raise TableError(f"cannot read JSON: {e.msg}", e.lineno) from None
        except (RecursionError, ValueError) as e:
            raise TableError(_value_problem(e), _line(text, at)) from None
        rows.append((row, _line(text, at)))
        if len(rows) > MAX_ROWS:
            raise TableError(f"it has over {MAX_ROWS:,} rows", _line(text, at))
        at = _skip(text, end)
    if text[at + 1 :].strip():
        raise TableError("text after the array", _line(text, at + 1))
    return _columns(rows, 1)


def _json_lines(text: str) -> dict[str, list]:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # only \n ends a line: U+2028 may be in a string
        if not line.strip():
            continue
        try:
            rows.append((json.loads(line, parse_constant=_no_constant, object_pairs_hook=_unique), n))
        except json.JSONDecodeError as e:
            raise TableError(f"cannot read JSON: {e.msg}", n) from None
        except (RecursionError, ValueError) as e:
            raise TableError(_value_problem(e), n) from None
        if len(rows) > MAX_ROWS:
            raise TableError(f"it has over {MAX_ROWS:,} rows", n)
    return _columns(rows, 1)


def _columns(rows: list[tuple[Any, int]], line: int) -> dict[str, list]:
    """Rows of objects with the same keys as columns. Numbers keep their type; anything else
    that is not text becomes its JSON text (as Torc does)."""
    if not rows:
        raise TableError("it has no rows", line)
    first, first_line = rows[0]
    if not isinstance(first, dict):
        raise TableError("each row is an object of parameter names and values", first_line)
    names = _names(list(first), first_line)
    columns: list[list] = [[] for _ in names]
    for row, n in rows:
        if not isinstance(row, dict):
            raise TableError("each row is an object of parameter names and values", n)
        if row.keys() != first.keys():
            missing = sorted(first.keys() - row.keys()) or sorted(row.keys() - first.keys())
            raise TableError(f"the row's names differ from the first row's (`{missing[0]}`)", n)
        for column, name in zip(columns, names):
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                value = json.dumps(value)
            column.append(_checked(value, n))
    return dict(zip(names, columns))


def _unique(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        twice = next(k for k, _ in pairs if sum(1 for j, _ in pairs if j == k) > 1)
        raise ValueError(f"{twice!r} is given twice in a row")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a value a parameter can take")


def _value_problem(e: Exception) -> str:
    return "the row is nested too deeply" if isinstance(e, RecursionError) else str(e)


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _line(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1
