"""Reading a spec's text (YAML, JSON, JSON5 or KDL) into a tree, and a way back to its lines.

YAML (and JSON, which YAML reads) goes through libyaml (`yaml12`) when it can, else ruamel; a
`Locator` turns a field path from validation into the line that holds it, finding it only when
an error asks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import msgspec
import pyjson5
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from torcd.errors import SpecError
from torcd.spec import yaml12
from torcd.spec.plain import NESTING_PROBLEM, NotPlain, TreeError, check_in_place, nests_too_deeply

_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")  # a key (any but `.` and `[`) or an index


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
        checked: bool = False,
    ):
        self.tree, self.file, self._build, self._find = tree, file, build, find
        self.checked = checked  # the tree is builtins already, with PlainTree's checks made
        self.root_line: int | None = None  # where the root is, when the tree keeps no lines

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


def spec_format(file: str, fmt: str | None = None) -> str:
    """The format asked for, else the file's extension's; YAML reads JSON too (what is JSON is read
    as JSON first)."""
    if fmt:
        return fmt
    ext = file.lower().rpartition(".")[2]
    return ext if ext in ("json", "json5", "kdl") else "yaml"


def load(text: str, file: str, fmt: str | None = None) -> tuple[Any, Locator]:
    """The spec's values (a tree of mappings and lists) and a way back to their lines."""
    fmt = spec_format(file, fmt)
    if fmt == "json5":
        data = _load_json5(text, file)
        return data, Locator(None, file, find=lambda path: _json5_line(text, path))  # linear: no size limit
    if fmt == "kdl":
        from torcd.spec.kdl import load_kdl  # only KDL specs need it

        tree, positioned = load_kdl(text, file)
        return tree, Locator(None, file, positioned)
    if fmt == "json":
        try:
            return _load_json(text, file)
        except yaml12.Fallback:
            pass  # YAML reads it, as it read every JSON spec before
    if yaml12.AVAILABLE:
        try:
            return _load_yaml12(text, file)
        except yaml12.Fallback:
            pass  # ruamel reads it, as it reads every YAML text where libyaml is missing
    tree = _load_yaml(text, file)
    return tree, Locator(tree, file)


def _load_yaml12(text: str, file: str) -> tuple[Any, Locator]:
    loc = Locator(None, file, find=_yaml_lines(text, file), checked=True)
    try:
        tree, root_line = yaml12.read(text)
    except TreeError as e:
        raise loc.error(e.message, e.field) from None
    loc.root_line = root_line
    return tree, loc


def _yaml_lines(text: str, file: str) -> Callable[[str], int | None]:
    """A field's line in a YAML (or JSON) text, for an error: the text is composed again the first
    time one is asked for, by libyaml if it can, else by ruamel."""
    composed: list[Any] = []

    def find(path: str) -> int | None:
        if not composed:
            try:
                composed.append(yaml12.compose(text) if yaml12.AVAILABLE else None)
            except yaml12.Fallback:
                composed.append(None)
            if composed[0] is None:
                composed[0] = Locator(_load_yaml(text, file), file)
        if isinstance(composed[0], Locator):
            return composed[0].line(path)
        return yaml12.line_of(composed[0], _PATH_TOKEN.findall(path.removeprefix("$")))

    return find


class _Duplicate(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate  # YAML refuses it, and says which
    return out


def _no_constant(name: str) -> Any:
    raise _Duplicate  # NaN, Infinity: text in YAML


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a character past U+FFFF, as two escapes


def _load_json(text: str, file: str) -> tuple[Any, Locator]:
    """A JSON spec by Python's json module (C); yaml12.Fallback where YAML could read it otherwise
    (a key twice, NaN, escaped surrogates, a value nested deep, a root that is not an object) or
    where it is not JSON."""
    if _SURROGATE_ESCAPE.search(text):
        raise yaml12.Fallback
    try:
        tree = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except (ValueError, RecursionError, _Duplicate):
        raise yaml12.Fallback from None
    if not isinstance(tree, dict):
        raise yaml12.Fallback
    loc = Locator(None, file, find=_yaml_lines(text, file), checked=True)
    try:
        check_in_place(tree)
    except NotPlain:
        raise yaml12.Fallback from None
    except TreeError as e:
        raise loc.error(e.message, e.field) from None
    return tree, loc


def _load_yaml(text: str, file: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        tree = yaml.load(text)
    except RecursionError:
        raise SpecError(NESTING_PROBLEM, file=file) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = e.problem or e.context or "invalid syntax"
        raise SpecError(f"cannot parse: {problem}", file=file, line=line) from None
    except YAMLError as e:
        raise SpecError(f"cannot parse: {e}", file=file) from None
    if nests_too_deeply(tree):
        raise SpecError(NESTING_PROBLEM, file=file)
    return tree


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
