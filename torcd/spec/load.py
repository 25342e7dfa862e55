"""Reading a spec's text (YAML, JSON, JSON5 or KDL) into a tree that remembers lines.

The tree is ruamel's (mappings and sequences with line numbers), whatever the format, so one
`Locator` turns a field path from validation into the line that holds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
import pyjson5
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from torcd.errors import SpecError

MAX_ALIAS_COST = 200_000  # values (and 64-character pieces of strings) copied through YAML aliases


_PATH_TOKEN = re.compile(r"\.([A-Za-z_][\w]*)|\[(\d+)\]")


class Locator:
    """Maps `$.jobs[3].name`-style paths to 1-based line numbers of a ruamel tree.

    For formats whose fast parser keeps no positions, `build` makes that tree when a line is
    first asked for, which happens only on error; or `find` reads the line from the text.
    """

    def __init__(
        self,
        tree: Any,
        file: str,
        build: Callable[[], Any] | None = None,
        find: Callable[[str], int | None] | None = None,
    ):
        self.tree, self.file, self._build, self._find = tree, file, build, find

    def line(self, path: str) -> int | None:
        if self._find is not None:
            return self._find(path)
        if self._build is not None:
            self.tree, self._build = self._build(), None
        node, line = self.tree, None
        for key, index in _PATH_TOKEN.findall(path.removeprefix("$")):
            try:  # a key the tree holds without a position keeps the line of what holds it
                if key and isinstance(node, CommentedMap) and key in node:
                    node, line = node[key], node.lc.key(key)[0] + 1
                elif index and isinstance(node, CommentedSeq) and int(index) < len(node):
                    node, line = node[int(index)], node.lc.item(int(index))[0] + 1
                else:
                    break
            except (KeyError, TypeError, IndexError):
                node = node[key] if key else node[int(index)]
        if line is None and hasattr(self.tree, "lc") and self.tree.lc.line is not None:
            line = self.tree.lc.line + 1
        return line

    def error(self, message: str, path: str) -> SpecError:
        return SpecError(message, file=self.file, line=self.line(path), field=path)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_TAB_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Text that a shell reads whole may span lines; names, paths and Slurm fields may not.
_MULTILINE = frozenset({"command", "recovery_script", "description", "invocation_script"})
# Lists and maps Torc types as optional: `input_files: null` (as Torc writes them) means none.
_NULL_MEANS_NONE = frozenset(
    {
        "depends_on_regexes",
        "input_files",
        "output_files",
        "input_file_regexes",
        "output_file_regexes",
        "input_user_data",
        "output_user_data",
        "input_user_data_regexes",
        "output_user_data_regexes",
        "parameters",
        "job_name_regexes",
        "commands",
        "files",
        "user_data",
        "resource_requirements",
        "failure_handlers",
        "slurm_schedulers",
        "actions",
        "env",
    }
)
Chain = tuple[Any, str | int] | None  # (parent chain, key or index), for a field path on error


class PlainTree:
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
                raise self.loc.error(
                    f"YAML aliases here copy more than {MAX_ALIAS_COST:,} values; "
                    "write the values out or use fewer nested aliases",
                    _path(alias),
                )
        if isinstance(node, dict):
            out = {}
            # Only the spec's own fields (the workflow's, and its jobs', files', ... ): never keys inside
            # free-form values (user data, metadata), whose nulls are theirs.
            structural = chain is None or (isinstance(chain[1], int) and chain[0] is not None and chain[0][0] is None)
            for k, v in node.items():
                k = k if isinstance(k, str) else str(k)
                self._check_key(k, key, chain)
                if v is None and structural and k in _NULL_MEANS_NONE:
                    continue
                out[k] = self.convert(v, (chain, k), f"env:{k}" if key == "env" else k, alias)
            return out
        if isinstance(node, list):
            return [self.convert(v, (chain, i), key, alias) for i, v in enumerate(node)]
        # ruamel's scalar subclasses (ScalarFloat, ScalarInt, quoted strings) as builtins
        for kind in (bool, int, float, str):
            if isinstance(node, kind):
                if isinstance(node, str):
                    self._check_text(node, key, chain)
                return kind(node)
        return node

    def _check_text(self, text: str, key: str, chain: Chain) -> None:
        multiline = key in _MULTILINE or key.startswith("env:")
        bad = (_CONTROL_BUT_TAB_NEWLINE if multiline else _CONTROL).search(text)
        if bad:
            allowed = "printable text, tabs and newlines" if multiline else "one line of printable text"
            name = key.removeprefix("env:") or "a value"
            raise self.loc.error(
                f"`{name}` contains the control character {bad[0]!r}; it must be {allowed}", _path(chain)
            )

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


MAX_LOCATE_BYTES = 4 * 2**20  # larger JSON5 specs name the field of an error but not its line


def spec_format(file: str, fmt: str | None = None) -> str:
    """The format asked for, else the file's extension's; YAML reads JSON too."""
    if fmt:
        return fmt
    ext = file.lower().rpartition(".")[2]
    return ext if ext in ("json5", "kdl") else "yaml"


def load(text: str, file: str, fmt: str | None = None) -> tuple[Any, Locator]:
    """The spec's values (a tree of mappings and lists) and a way back to their lines."""
    fmt = spec_format(file, fmt)
    if fmt == "json5":
        data = _load_json5(text, file)
        return data, Locator(
            None, file, find=lambda path: _json5_line(text, path) if len(text) <= MAX_LOCATE_BYTES else None
        )
    if fmt == "kdl":
        from torcd.spec.kdl import load_kdl  # only KDL specs need it

        tree, positioned = load_kdl(text, file)
        return tree, Locator(None, file, positioned)
    tree = _load_yaml(text, file)
    return tree, Locator(tree, file)


def _load_yaml(text: str, file: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
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


_BYTES = re.compile(r"b'([^']*)'")  # pyjson5 names tokens as bytes reprs
_CODEPOINT = re.compile(r"U\+([0-9a-fA-F]{4,6})")
_NEAR = re.compile(r"^(.*?) near (\d+)(.*)$", re.S)


def _load_json5(text: str, file: str) -> Any:
    try:
        return pyjson5.loads(text)
    except pyjson5.Json5Exception as e:
        message = str(e.args[0]) if e.args else "invalid syntax"
        m = _NEAR.match(message)
        line = text.count("\n", 0, int(m[2])) + 1 if m else None
        problem = (m[1] + m[3]) if m else message
        problem = _CODEPOINT.sub(lambda c: repr(chr(int(c[1], 16))), _BYTES.sub(r"\1", problem))
        raise SpecError(f"cannot parse JSON5: {problem.strip()}", file=file, line=line) from None


# Pieces of JSON5, possessive (`*+`, `++`): a failed match never backtracks.
_J5_STRING = r""""[^"\\]*+(?:\\[\s\S][^"\\]*+)*+"|'[^'\\]*+(?:\\[\s\S][^'\\]*+)*+'"""
_J5_COMMENT = r"//[^\n\r\u2028\u2029]*+|/\*[^*]*+\*++(?:[^/*][^*]*+\*++)*+/"
# One token after any space and comments: an opening bracket (group 1), a closing one (2), `:` or
# `,` (3), a string (4), or a bare word: a number, an identifier or a literal (5).
_J5_TOKEN = re.compile(
    r"(?:[\s\ufeff]++|" + _J5_COMMENT + r")*+(?:([{\[])|([}\]])|([:,])|(" + _J5_STRING + r""")|([^\s{}\[\]:,"'/]++))"""
)
# Everything up to the next bracket (group 1), strings and comments included.
_J5_TO_BRACKET = re.compile(r"""(?:[^{}\[\]"'/]++|""" + _J5_STRING + "|" + _J5_COMMENT + r")*+([{}\[\]])")
_OPEN, _CLOSE, _STRING = 1, 2, 4


class _Unreadable(Exception):
    """The text holds something this scan does not follow (pyjson5 read it): no line then."""


def _json5_line(text: str, path: str) -> int | None:
    """The line of the deepest part of `path` in a JSON5 text that pyjson5 has read: a key's line,
    or an item's. One pass over what comes before it, in constant memory, where json-five's model
    of a 3.6 MiB spec took half a minute and 800 MB."""
    try:
        value, at = _j5_token(text, 0), None
        for key, index in _PATH_TOKEN.findall(path.removeprefix("$")):
            if key and value[_OPEN] == "{":
                found = _j5_member(text, value.end(), key)
            elif index and value[_OPEN] == "[":
                found = _j5_item(text, value.end(), int(index))
            else:
                break
            if found is None:
                break
            at, value = found
        return None if at is None else text.count("\n", 0, at) + 1
    except (_Unreadable, RecursionError, ValueError):
        return None


def _j5_token(text: str, pos: int) -> re.Match[str]:
    m = _J5_TOKEN.match(text, pos)
    if m is None:
        raise _Unreadable
    return m


def _group(token: re.Match[str]) -> int:
    """The group a token matched (every alternative of _J5_TOKEN has one)."""
    if token.lastindex is None:
        raise _Unreadable
    return token.lastindex


def _j5_member(text: str, pos: int, key: str) -> tuple[int, re.Match[str]] | None:
    """Where `key` is in the object whose members start at `pos`, and its value: the last one,
    as pyjson5 keeps the last."""
    found = None
    while (name := _j5_token(text, pos))[_CLOSE] is None:
        value = _j5_token(text, _j5_token(text, name.end()).end())  # past the `:`
        if _j5_key(name) == key:
            found = (name.start(_group(name)), value)
        after = _j5_token(text, _j5_skip(text, value))
        if after[_CLOSE]:
            break
        pos = after.end()  # past the `,`
    return found


def _j5_item(text: str, pos: int, index: int) -> tuple[int, re.Match[str]] | None:
    for _ in range(index):
        item = _j5_token(text, pos)
        if item[_CLOSE]:
            return None
        after = _j5_token(text, _j5_skip(text, item))
        if after[_CLOSE]:
            return None
        pos = after.end()
    item = _j5_token(text, pos)
    return None if item[_CLOSE] else (item.start(_group(item)), item)


def _j5_skip(text: str, value: re.Match[str]) -> int:
    """The offset just past a value."""
    if not value[_OPEN]:
        return value.end()
    depth, pos = 1, value.end()
    while depth:
        m = _J5_TO_BRACKET.match(text, pos)
        if m is None:
            raise _Unreadable
        depth += 1 if m[1] in "{[" else -1
        pos = m.end()
    return pos


def _j5_key(name: re.Match[str]) -> str:
    token = name[_group(name)]
    if "\\" not in token:
        return token[1:-1] if name[_STRING] else token
    decoded = pyjson5.loads("{" + token + ": 0}")  # escapes, as pyjson5 read them
    return next(iter(decoded))


def first_content_line(text: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            return n
    return 1


def metadata_of(value: dict | str | None, loc: Locator) -> dict | None:
    """Torc v0.12.0 documents `metadata` as a JSON string; older specs give a mapping."""
    if not isinstance(value, str):
        return value
    try:
        parsed = msgspec.json.decode(value)
    except msgspec.DecodeError as e:
        raise loc.error(f"`metadata` is text that is not JSON ({e})", "$.metadata") from None
    if not isinstance(parsed, dict):
        raise loc.error('`metadata` as text must be a JSON object, like \'{"team": "a"}\'', "$.metadata")
    return parsed
