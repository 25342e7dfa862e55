"""KDL specs, as Torc writes them: nodes become the keys of the YAML/JSON structure.

ckdl parses (KDL 2, which Torc writes, and KDL 1). It keeps no positions, so a small scan of
the text finds the line where each node starts, for error messages; the scan only counts
nodes, strings, comments and braces, and is checked against ckdl's tree before it is used.
ckdl also keeps only the last of a property given twice on one node; the same scan finds such
a property, when the text holds more `=` than ckdl kept properties. Every scan is linear.

Mapping (Torc's): a node's name is the key and its first argument the value; `job "name"`,
`file "name"`, `dataset "name"`, `resource_requirements "name"`, `failure_handler "name"`,
`slurm_scheduler "name"`, `user_data "name"`, `action`, `rule` are entries of their lists; list
fields are repeated nodes with one value each (`depends_on "a"`, `input_file "f"`,
`input_dataset "d"`, an action's `command "..."` and
`job "a"`), except `use_parameters`, `exit_codes`, `causes` and an action's `jobs`, which take
several arguments; a node with children is a mapping; `key=value` properties are keys too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import ckdl
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from torcd.errors import SpecError

# node name -> (list key, named: its first argument is the entry's `name`)
_ENTRIES = {
    "workflow": {
        "job": ("jobs", True),
        "file": ("files", True),
        "dataset": ("datasets", True),
        "user_data": ("user_data", True),
        "resource_requirements": ("resource_requirements", True),
        "failure_handler": ("failure_handlers", True),
        "slurm_scheduler": ("slurm_schedulers", True),
        "action": ("actions", False),
    },
    "failure_handler": {"rule": ("rules", False)},
}
# repeated one-value nodes -> the list they make
_REPEATED = {
    "job": {
        "depends_on": "depends_on",
        "depends_on_job": "depends_on",
        "depends_on_regexes": "depends_on_regexes",
        "input_file": "input_files",
        "output_file": "output_files",
        "input_files": "input_files",
        "output_files": "output_files",
        "input_file_regexes": "input_file_regexes",
        "output_file_regexes": "output_file_regexes",
        "input_user_data": "input_user_data",
        "output_user_data": "output_user_data",
        "input_user_data_regexes": "input_user_data_regexes",
        "output_user_data_regexes": "output_user_data_regexes",
        "input_dataset": "input_datasets",
        "output_dataset": "output_datasets",
        "input_datasets": "input_datasets",
        "output_datasets": "output_datasets",
    },
    "action": {"command": "commands", "job": "jobs", "job_name_regexes": "job_name_regexes"},
}
_MULTI_ARG = {"use_parameters", "exit_codes", "causes", "jobs"}
_CONTEXT_OF = {"jobs": "job", "actions": "action", "failure_handlers": "failure_handler", "rules": "rule"}


def load_kdl(text: str, file: str) -> tuple[Any, Callable[[], Any]]:
    """The spec's tree, and how to make it again with lines (for a Locator, on error)."""
    try:
        doc = ckdl.parse(text, version="any")
    except ckdl.ParseError as e:
        raise SpecError(f"cannot parse KDL: {e}", file=file, line=_error_line(text)) from None
    except RecursionError:
        raise SpecError("cannot parse KDL: nested too deeply", file=file) from None
    # Each property has an `=`: with no more of them than ckdl kept, none was given twice.
    if (
        "=" in text
        and text.count("=") > _count_properties(doc.nodes)
        and (twice := _duplicate_property(text)) is not None
    ):
        raise SpecError(f"`{twice[0]}` is given twice", file=file, line=twice[1])
    try:
        tree = _block(doc.nodes, None, "workflow", file)
    except SpecError:
        _positioned(doc, text, file)  # the same error again, with its line
        raise
    except RecursionError:
        raise SpecError("the spec is nested too deeply", file=file) from None
    return tree, lambda: _positioned(doc, text, file)


def _count_properties(nodes: list) -> int:
    count, stack = 0, [nodes]
    while stack:
        for node in stack.pop():
            count += len(node.properties)
            if node.children:
                stack.append(node.children)
    return count


def _positioned(doc: Any, text: str, file: str) -> dict | None:
    """The tree again with the line of each node: made only when an error needs a line."""
    lines = _scan(text)
    if lines is None or not _same_shape(doc.nodes, lines):
        return None  # the scan disagrees with the parser: the error names its field, not its line
    return _block(doc.nodes, lines, "workflow", file)


# -- conversion -----------------------------------------------------------------------------

Lines = list[tuple[int, "Lines"]]  # each node's line and its children's


def _block(nodes: list, lines: Lines | None, context: str, file: str) -> dict:
    """The nodes as a mapping: plain dicts and lists, or, with `lines`, ruamel's that hold them."""
    out: dict = CommentedMap() if lines is not None else {}
    entries, repeated = _ENTRIES.get(context, {}), _REPEATED.get(context, {})
    for k, node in enumerate(nodes):
        line, children = lines[k] if lines is not None else (None, None)
        name = node.name
        if name in entries:
            key, named = entries[name]
            item = _block(node.children, children, _CONTEXT_OF.get(key, name), file)
            for p, v in reversed(node.properties.items()):  # `file "f" path="p"`: path first
                _once(item, p, file, line)
                item = _put_first(item, p, _value(v))
                _mark(item, p, line)
            if named:
                if len(node.args) != 1:
                    raise SpecError(
                        f'`{name}` takes its name as its one argument, like {name} "name"', file=file, line=line
                    )
                _once(item, "name", file, line)
                item = _put_first(item, "name", _value(node.args[0]))
                _mark(item, "name", line)
            _append(out, key, item, line)
        elif name in repeated:
            for arg in node.args or [None]:
                _append(out, repeated[name], _value(arg), line)
        else:
            _once(out, name, file, line)
            if len(node.args) > 1 and name not in _MULTI_ARG:
                raise SpecError(f"`{name}` takes one value, and has {len(node.args)}", file=file, line=line)
            out[name] = _node_value(node, children, file)
            _mark(out, name, line)
    return out


def _put_first(item: dict, key: str, value: Any) -> dict:
    if isinstance(item, CommentedMap):
        item.insert(0, key, value)
        return item
    return {key: value, **item}


def _once(out: dict, key: str, file: str, line: int | None) -> None:
    if key in out:
        raise SpecError(f"`{key}` is given twice", file=file, line=line)


def _node_value(node: Any, lines: Lines | None, file: str) -> Any:
    if node.children:
        value = _block(node.children, lines, node.name, file)
        for p, v in node.properties.items():
            if p in value:
                raise SpecError(f"`{p}` is given twice", file=file)
            value[p] = _value(v)
        return value
    if node.properties and not node.args:
        return {p: _value(v) for p, v in node.properties.items()}
    if node.name in _MULTI_ARG:
        return [_value(a) for a in node.args]
    if node.name == "data" and node.args and isinstance(node.args[0], str):  # user data: JSON in a string
        try:
            return json.loads(node.args[0])
        except ValueError:
            return node.args[0]
    return _value(node.args[0]) if node.args else None


def _value(v: Any) -> Any:
    return v.value if isinstance(v, ckdl.Value) else v  # a type annotation, like (u8)5, is dropped


def _append(out: dict, key: str, item: Any, line: int | None) -> None:
    if key not in out:
        out[key] = CommentedSeq() if line is not None else []
        _mark(out, key, line)
    seq = out[key]
    seq.append(item)
    if line is not None:
        seq.lc.add_kv_line_col(len(seq) - 1, [line - 1, 0])


def _mark(out: dict, key: str, line: int | None) -> None:
    if line is not None:
        out.lc.add_kv_line_col(key, [line - 1, 0, line - 1, 0])  # type: ignore[attr-defined]


def _same_shape(nodes: list, lines: Lines) -> bool:
    return len(nodes) == len(lines) and all(_same_shape(n.children, c) for n, (_, c) in zip(nodes, lines))


# -- where nodes start ------------------------------------------------------------------------


def _lex(text: str) -> Iterator[tuple[str, int, int, int]]:
    """KDL's structure without its values: ("\\n" | "{" | "}" | ";" | "/-" | "\\" | "token", start,
    end, line), skipping space, comments and what a token holds. ValueError or IndexError where a
    string or comment never closes (after yielding the token that holds such a string)."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c in " \t\r\ufeff":
            i += 1
        elif text.startswith("//", i):
            i = _line_end(text, i)
        elif text.startswith("/*", i):
            i, line = _block_comment(text, i, line)
        elif text.startswith("/-", i):
            yield "/-", i, i + 2, line
            i += 2
        elif c in "\n{};\\":
            yield c, i, i + 1, line
            line, i = line + (c == "\n"), i + 1
        else:
            try:
                end, next_line = _token(text, i, line)
            except (ValueError, IndexError):
                yield "token", i, n, line  # where the string that never closes starts
                raise
            yield "token", i, end, line
            i, line = end, next_line


def _scan(text: str) -> Lines | None:
    """The line of each node and its children, skipping those a `/-` comments out; None if the
    text holds something this scan does not follow."""
    root: Lines = []
    stack: list[tuple[Lines, bool]] = [(root, False)]  # (the nodes of a block, whether it is dropped)
    node_start, slashdash, drop_block, continued = True, False, False, False
    try:
        for kind, _, _, line in _lex(text):
            if kind == "\n":
                node_start, continued = node_start or not continued, False
            elif kind == "/-":
                slashdash = True
            elif kind == "\\":
                continued = True
            elif kind == ";":
                node_start = True
            elif kind == "{":
                nodes, dropped = stack[-1]
                block_dropped = dropped or slashdash or drop_block
                stack.append((nodes[-1][1] if nodes and not block_dropped else [], block_dropped))
                node_start, slashdash, drop_block = True, False, False
            elif kind == "}":
                stack.pop()
                node_start = True
            elif node_start:
                nodes, dropped = stack[-1]
                if slashdash or dropped:
                    drop_block = True  # its children go with it
                else:
                    nodes.append((line, []))
                    drop_block = False
                node_start = slashdash = False
            else:
                slashdash = False  # an argument or property commented out
    except (IndexError, ValueError):
        return None
    return root if len(stack) == 1 else None


def _duplicate_property(text: str) -> tuple[str, int] | None:
    """The first property a node gives twice (`file "f" path="a" path="b"`) and its line, or None.
    ckdl keeps only the last of them, so the text is read again, as `_scan` reads it; only
    properties in what a `/-` leaves count."""
    dropped_blocks, keys = [False], set[str]()
    node_start, slashdash, drop_node, continued = True, False, False, False
    prev: tuple[str, bool, int] | None = None  # the token before, which may be a key spaced from its `=`
    try:
        for kind, start, end, line in _lex(text):
            if kind == "\n":
                node_start, continued = node_start or not continued, False
            elif kind == "\\":
                continued = True
            elif kind == ";":
                node_start = True
            elif kind == "/-":
                slashdash = True
            elif kind == "{":
                dropped_blocks.append(dropped_blocks[-1] or slashdash or drop_node)
                node_start, slashdash = True, False
            elif kind == "}":
                dropped_blocks.pop()
                node_start = True
            elif node_start:
                keys.clear()
                drop_node, node_start, slashdash, prev = slashdash or dropped_blocks[-1], False, False, None
            else:
                token = text[start:end]
                if _is_string(token) or "=" not in token:  # a value, or a key spaced from its `=`
                    prev = (token, slashdash, line)
                else:  # `key=value`, `key=`, or the `=` after a key
                    key = token.partition("=")[0]
                    spelled, dropped, at = (key, slashdash, line) if key else prev or ("", True, line)
                    if not (dropped or drop_node):
                        name = _key_name(spelled)
                        if name in keys:
                            return name, at
                        keys.add(name)
                    prev = None
                slashdash = False
    except (IndexError, ValueError):
        return None  # ckdl read it, this scan cannot: nothing to add
    return None


def _is_string(token: str) -> bool:
    return token[0] in '"#' or token.startswith(('r"', "r#"))


def _key_name(token: str) -> str:
    """A property's key as ckdl reads it: bare, quoted, raw or escaped."""
    if not _is_string(token):
        return token
    if token[0] == '"' and "\\" not in token and not token.startswith('"""'):
        return token[1:-1]
    try:
        (name,) = ckdl.parse(f"n {token}=0", version="any").nodes[0].properties
        return name
    except (ckdl.ParseError, ValueError, IndexError):
        return token


def _line_end(text: str, i: int) -> int:
    j = text.find("\n", i)
    return len(text) if j < 0 else j


def _block_comment(text: str, i: int, line: int) -> tuple[int, int]:
    """Past a (nested) block comment. The next `/*` and `*/` are each searched for again only
    once passed: searching for both at every step cost the rest of the text per `/*`, so an
    unclosed `/* /* /* ...` of 300 KB took half a minute."""
    depth, i = 1, i + 2
    opens, closes = text.find("/*", i), text.find("*/", i)
    while depth:
        if closes < 0:
            raise ValueError("unclosed comment")
        j = opens if 0 <= opens < closes else closes
        depth += 1 if j == opens else -1
        line += text.count("\n", i, j)
        i = j + 2
        if 0 <= opens < i:
            opens = text.find("/*", i)
        if closes < i:
            closes = text.find("*/", i)
    return i, line


def _token(text: str, i: int, line: int) -> tuple[int, int]:
    """Past one token (a string in any of KDL's forms, or anything up to a delimiter)."""
    hashes = 0
    j = i + 1 if text[i] == "r" and i + 1 < len(text) and text[i + 1] in '#"' else i  # KDL 1's r#"..."#
    while j < len(text) and text[j] == "#":
        hashes, j = hashes + 1, j + 1
    if j < len(text) and text[j] == '"':
        triple = text.startswith('"""', j)
        close = ('"""' if triple else '"') + "#" * hashes
        k = j + (3 if triple else 1)
        while True:
            k = text.index(close, k)
            if hashes or text[k - 1] != "\\" or _escaped_backslash(text, k):
                break
            k += 1
        end = k + len(close)
        return end, line + text.count("\n", i, end)
    k = i
    while (
        k < len(text)
        and text[k] not in ' \t\r\n;{}"\\'
        and not text.startswith("//", k)
        and not text.startswith("/*", k)
    ):
        k += 1
    return max(k, i + 1), line


def _escaped_backslash(text: str, k: int) -> bool:
    """Whether the quote at k closes the string: an even number of backslashes before it."""
    count = 0
    while text[k - 1 - count] == "\\":
        count += 1
    return count % 2 == 0


MAX_PREFIX_SEARCH = 2**20  # bytes of one top-level node searched for its error's line; past it, the node's line


def _error_line(text: str) -> int | None:
    """The line of the first node (at any depth) before which the text still parses: where the
    syntax error is, found in a few parses' worth of work. Parsing every prefix of the whole
    text cost n log n with ckdl's constant: 27 s for a 7 MiB spec. A text that is neither KDL 2
    nor KDL 1 is taken for the version it follows further."""
    starts = _starts(text)
    if not starts:
        return None
    lines = [line for version in (2, 1) if (line := _first_failure(text, starts, version)) is not None]
    return max(lines, default=None)


def _first_failure(text: str, starts: list[tuple[int, int, int, bool]], version: int) -> int | None:
    """Top-level nodes parse on their own, so halving the list of them finds the first that fails
    (in about one parse of the text); within it, prefixes cut at node starts and closed with
    braces are parsed, halving again (n log n in that node's size, so a node over
    MAX_PREFIX_SEARCH is named by its first line)."""
    # Cut before each top-level node on a line of its own; the first piece starts the text.
    cuts = [0] + [k for k, (_, _, depth, own) in enumerate(starts) if k and depth == 0 and own] + [len(starts)]
    bounds = [0] + [starts[k][0] for k in cuts[1:-1]] + [len(text)]
    lo, hi = 0, len(cuts) - 1  # pieces lo..hi-1 hold the first that fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _parses(text, bounds[lo], bounds[mid], version):
            lo = mid
        else:
            hi = mid
    begin, end = bounds[lo], bounds[lo + 1]
    if _parses(text, begin, end, version):
        return None  # this scan and ckdl disagree about where nodes are: no line rather than a wrong one
    inner = starts[cuts[lo] : cuts[lo + 1]]
    if end - begin > MAX_PREFIX_SEARCH:
        return inner[0][1]
    lo, hi = 0, len(inner) - 1  # the last start whose prefix parses (else the first)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        offset, _, depth, _ = inner[mid]
        if _parses(text, begin, offset, version, "\n" + "}\n" * depth):
            lo = mid
        else:
            hi = mid - 1
    return inner[lo][1]


def _parses(text: str, begin: int, end: int, version: int, closing: str = "") -> bool:
    try:
        ckdl.parse(text[begin:end] + closing, version=version)
        return True
    except ckdl.ParseError:
        return False


def _starts(text: str) -> list[tuple[int, int, int, bool]]:
    """(offset, line, depth, whether its line is its own) of each line's first token that could
    start a node. A line is not its own where a `\\` or `/-` carries the one before on to it,
    or where it holds a `}` before the token: cutting the text there could split a node."""
    out, depth, at_start, own, carried = [], 0, True, True, False
    try:
        for kind, offset, _, line in _lex(text):
            if kind == "\n":
                at_start, own, carried = at_start or not carried, not carried, False
            elif kind in ("\\", "/-"):
                if kind == "/-" and at_start:
                    out.append((offset, line, depth, own))
                    at_start = False
                carried = True
            elif kind == "{":
                depth, at_start, carried = depth + 1, True, False
            elif kind == "}":
                depth, own = max(0, depth - 1), False
            elif kind == "token":
                if at_start:
                    out.append((offset, line, depth, own))
                    at_start = False
                carried = False
    except (IndexError, ValueError):
        pass  # the error is in what was not scanned: the starts found so far bound it
    return out
