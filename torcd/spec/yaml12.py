"""YAML specs at the speed of libyaml: PyYAML's C composer, then one pass that builds builtins.

ruamel.yaml (pure Python) read a 100,000-job spec in 44 s, to keep a line for each value. Here
libyaml composes the document, scalars are resolved as YAML 1.2's core schema (as ruamel
resolves them: `yes`/`on` are text, `0o17` is 15, `1_000` is 1000, no sexagesimal numbers), and
one pass builds plain dicts and lists while it makes `PlainTree`'s checks and counts what
aliases copy, so a bomb stops as early. No line is kept: an error composes the text again
and walks to the line of its field.

Where libyaml and ruamel could read a text differently, ruamel reads it (`Fallback`): tabs,
directives, YAML 1.1 line breaks (NEL, LS, PS), merge keys (`<<`), explicit tags, keys that are
not text, numbers or booleans, any syntax error (for ruamel's message and line), and a key given
twice (for ruamel's message).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from torcd.spec.plain import (
    ALIAS_PROBLEM,
    CONTROL,
    MAX_ALIAS_COST,
    MAX_DEPTH,
    NULL_MEANS_NONE,
    TreeError,
    key_problem,
    text_problem,
)

AVAILABLE = bool(getattr(yaml, "__with_libyaml__", False))


class Fallback(Exception):
    """This text is for ruamel to read: libyaml might not read it as ruamel would."""


class _OverBudget(Exception):
    """Aliases copied more than MAX_ALIAS_COST values: raised where the copy is, named where it began."""


# Tags the composer is given back (compared by identity); any other tag was written in the text.
_TEXT, _SPECIAL, _SEQ, _MAP = "!text", "!special", "!seq", "!map"
_SPECIAL_FIRST = frozenset("tTfF-+0123456789.<~nN=")  # a plain scalar that may not be text (YAML 1.2)
_CONSTANTS: dict[str, Any] = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(("~", "null", "Null", "NULL", ""), None),
}
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?")
# ruamel's YAML 1.2 resolvers for numbers and timestamps; a match that is not a plain decimal
# or float above is given to ruamel itself (`_ruamel_scalar`), once per distinct text.
_RUAMEL_NUMBER = re.compile(
    r"""[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN)
    |[-+]?0b[0-1_]+
    |[-+]?0o?[0-7_]+
    |[-+]?[0-9_]+
    |[-+]?0x[0-9a-fA-F_]+
    |[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
    |[0-9][0-9][0-9][0-9]\ *-[0-9][0-9]?\ *-[0-9][0-9]?(?:[Tt]|[\ \t]+)[0-9][0-9]?\ *:[0-9][0-9]\ *:[0-9][0-9]\ *
     (?:\.[0-9]*)?(?:[\ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?""",
    re.X,
)
_RUAMEL_SCALARS: dict[str, Any] = {}
# Text libyaml (YAML 1.1) may read otherwise than ruamel (1.2): tabs, NEL/LS/PS line breaks, directives.
_RUAMEL_TEXT = re.compile(r"[\t\x85\u2028\u2029]|^%", re.M)


class _Composer(yaml.CSafeLoader):
    """libyaml's composer, tagging scalars only as text or as what needs resolving."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if implicit[0]:  # plain
                return _SPECIAL if not value or value[0] in _SPECIAL_FIRST else _TEXT
            if implicit[1]:  # quoted
                return _TEXT
            raise Fallback  # the non-specific tag `!`
        return _SEQ if kind is SequenceNode else _MAP


def compose(text: str) -> Node | None:
    """The document's node graph (an alias is the node it names); Fallback where ruamel should read."""
    if _RUAMEL_TEXT.search(text):
        raise Fallback
    composer = _Composer(text)
    try:
        return composer.get_single_node()
    except yaml.YAMLError:
        raise Fallback from None
    finally:
        composer.dispose()


def scalar(value: str) -> Any:
    """A plain scalar as YAML 1.2's core schema reads it (as ruamel does)."""
    first = value[0] if value else ""
    if first in "tTfFnN~" or not value:
        return _CONSTANTS.get(value, value)
    if first in "<=":
        if value == "<<":
            raise Fallback  # a merge key
        return value if value != "=" else _ruamel_scalar(value)
    if _DECIMAL.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    if _RUAMEL_NUMBER.fullmatch(value):
        return _ruamel_scalar(value)
    return value


def _ruamel_scalar(value: str) -> Any:
    """What ruamel makes of a rare form (`0o17`, `1_000`, `.inf`, a timestamp), as a builtin."""
    found = _RUAMEL_SCALARS.get(value)
    if found is None and value not in _RUAMEL_SCALARS:
        from ruamel.yaml import YAML

        loaded = YAML(typ="rt").load(f"k: {value}\n")["k"]
        for kind in (bool, int, float, str):
            if isinstance(loaded, kind):
                loaded = kind(loaded)
                break
        if len(_RUAMEL_SCALARS) < 10_000:
            _RUAMEL_SCALARS[value] = loaded
        found = loaded
    return found


def _key(node: Node) -> str:
    if node.tag is _TEXT:
        return node.value
    if node.tag is not _SPECIAL:
        raise Fallback  # a mapping or a list as a key, or a tagged key
    value = scalar(node.value)
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int)):
        return str(value)
    raise Fallback  # a float or a date: ruamel's own type, printed its own way


class Builder:
    """One pass over the node graph: builtins out, with `PlainTree`'s checks and alias costs."""

    def __init__(self) -> None:
        self.seen = set[int]()  # collections built once: met again, they are aliases
        self.cost = 0

    def build(self, node: Node, key: str, where: int, copying: bool) -> Any:
        """`where`: 0 the root, 1 a value of the root, 2 an item of a list that is one, 3 and up deeper;
        the root's and those items' null structural fields are dropped, as `PlainTree` drops them.
        `copying`: inside an alias, where every value costs."""
        tag = node.tag
        if tag is _TEXT or tag is _SPECIAL:
            value = node.value if tag is _TEXT else scalar(node.value)
            if copying:
                self.cost += 1 + (len(value) // 64 if isinstance(value, str) else 0)
                if self.cost > MAX_ALIAS_COST:
                    raise _OverBudget
            if type(value) is str and CONTROL.search(value) and (problem := text_problem(value, key)):
                raise TreeError(problem)
            return value
        if not copying and where != 1 and id(node) in self.seen:
            copying = True  # an alias (not one the root holds, which `PlainTree` does not count): a copy, that costs
        self.seen.add(id(node))
        if copying:
            self.cost += 1
            if self.cost > MAX_ALIAS_COST:
                raise _OverBudget
        if where > MAX_DEPTH:
            raise Fallback  # ruamel finds it too deep, or not, depending on the stack it is read on
        if tag is _MAP:
            return self._mapping(node, key, where, copying)
        if tag is _SEQ:
            out, inner = [], 2 if where == 1 else max(where, 2) + 1
            for i, item in enumerate(node.value):
                try:
                    out.append(self.build(item, key, inner, copying))
                except TreeError as e:
                    e.parts.append(i)
                    raise
                except _OverBudget:
                    if copying:
                        raise
                    raise TreeError(ALIAS_PROBLEM) from None
            return out
        raise Fallback  # an explicit tag

    def _mapping(self, node: Node, key: str, where: int, copying: bool) -> dict:
        out: dict[str, Any] = {}
        structural, inner, env = where == 0 or where == 2, 1 if where == 0 else max(where, 2) + 1, key == "env"
        dropped: list[str] = []
        not_text = False
        for key_node, value_node in node.value:
            if key_node.tag is _TEXT:
                k = key_node.value
            else:
                k, not_text = _key(key_node), True
            if problem := key_problem(k, key):
                raise TreeError(problem)
            if structural and k in NULL_MEANS_NONE and value_node.tag is _SPECIAL and scalar(value_node.value) is None:
                dropped.append(k)
                continue
            try:
                out[k] = self.build(value_node, "env:" + k if env else k, inner, copying)
            except TreeError as e:
                e.parts.append(k)
                raise
            except _OverBudget:
                if copying:
                    raise
                raise TreeError(ALIAS_PROBLEM) from None
        if not_text or len(out) + len(dropped) != len(node.value) or (dropped and not _distinct(out, dropped)):
            _refuse_duplicates(node)
        return out


def _distinct(out: dict, dropped: list[str]) -> bool:
    return len(set(dropped)) == len(dropped) and not any(k in out for k in dropped)


def _refuse_duplicates(node: Node) -> None:
    """Fallback if a key is given twice (ruamel names it, its way); keys that differ but read
    the same as text (`1` and `'1'`) are not the same key, and the later one stays."""
    keys: dict[Any, None] = {}
    for key_node, _ in node.value:
        key = key_node.value if key_node.tag is _TEXT else scalar(key_node.value)
        if key in keys:
            raise Fallback
        keys[key] = None


def check_duplicates(root: Node) -> None:
    """Fallback if any mapping gives a key twice: ruamel refuses that before any other check."""
    seen, stack = set[int](), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen or node.tag is _TEXT or node.tag is _SPECIAL:
            continue
        seen.add(id(node))
        if node.tag is _MAP:
            _refuse_duplicates(node)
            for k, v in node.value:
                stack += (k, v)
        else:
            stack += node.value


def read(text: str) -> tuple[Any, int | None]:
    """The spec's values, checked, and the line of its root collection (for a spec that is not a
    mapping); TreeError for a refused value, Fallback for ruamel to read the text."""
    root = compose(text)
    if root is None:
        return None, None
    if root.tag is not _MAP:
        check_duplicates(root)
        if root.tag is _SEQ:
            if any(child.tag in (_SEQ, _MAP) for child in root.value):
                raise Fallback  # how deep it nests is refused first, as ruamel reads it (a libyaml may not limit it)
            return [], root.start_mark.line + 1
        return (root.value if root.tag is _TEXT else scalar(root.value)), None
    try:
        return Builder().build(root, "", 0, False), root.start_mark.line + 1
    except TreeError:
        check_duplicates(root)  # ruamel refuses a duplicate key first, wherever it is
        raise
    except RecursionError:
        raise Fallback from None


def line_of(root: Node | None, steps: list[tuple[str, str]]) -> int | None:
    """The line of the deepest part of a field path that the node graph holds (a key's line, or
    an item's), as the ruamel tree would give it; the root's line if none."""
    node, line = root, None
    for key, index in steps:
        if key and isinstance(node, MappingNode):
            found = None
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and _text_key(key_node) == key:
                    found = (key_node, value_node)
            if found is None:
                break
            node, line = found[1], found[0].start_mark.line + 1
        elif index and isinstance(node, SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        else:
            break
    if line is None and isinstance(root, (MappingNode, SequenceNode)):
        line = root.start_mark.line + 1
    return line


def _text_key(node: ScalarNode) -> str | None:
    """A key as ruamel's tree holds it, when that is text (a key read as a number is not found)."""
    if node.tag is _TEXT:
        return node.value
    try:
        value = scalar(node.value)
    except Fallback:
        return None
    return value if isinstance(value, str) else None
