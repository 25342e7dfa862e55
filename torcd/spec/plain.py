"""What every spec's values must be, whatever the format: builtins only, no control characters
where one line of text is expected, env names that a process can have, and no alias bomb.

`PlainTree` checks a parsed tree and copies it as builtins; the YAML reader (`yaml12`) applies
the same checks while it builds its tree, with `text_problem`, `key_problem` and the same costs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torcd.errors import SpecError

MAX_ALIAS_COST = 200_000  # values (and 64-character pieces of strings) copied through YAML aliases
ALIAS_PROBLEM = (
    f"YAML aliases here copy more than {MAX_ALIAS_COST:,} values; write the values out or use fewer nested aliases"
)

MAX_DEPTH = 64  # collections within collections checked here; deeper, the readers of old check them
# Deeper than this, any spec is refused: a fixed limit, so what is refused does not depend on the
# interpreter's recursion limit (a test runner may raise it), and well within what ruamel can read.
MAX_NESTING = 100
NESTING_PROBLEM = "the spec is nested too deeply"

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_TAB_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Text that a shell reads whole may span lines; names, paths and Slurm fields may not.
MULTILINE = frozenset({"command", "recovery_script", "description", "invocation_script"})
# Lists and maps Torc types as optional: `input_files: null` (as Torc writes them) means none.
NULL_MEANS_NONE = frozenset(
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


class TreeError(Exception):
    """A value refused while a tree is checked; `parts` is its field path, innermost first."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message, self.parts = message, list[str | int]()

    def with_parts(self, *parts: str | int) -> TreeError:
        self.parts.extend(parts)
        return self

    @property
    def field(self) -> str:
        return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in reversed(self.parts))


class NotPlain(Exception):
    """The tree holds what `check_in_place` does not check (a key that is not text, a type of
    ruamel's): `PlainTree` converts it."""


def check_in_place(node: Any, key: str = "", where: int = 0) -> None:
    """`PlainTree`'s checks on a tree of builtins that shares no container (as JSON5 and KDL give
    it), dropping null structural fields in place instead of copying the tree. `where` as in
    `yaml12.Builder.build`. TreeError for a refused value; NotPlain where PlainTree must convert."""
    kind = type(node)
    if where > MAX_DEPTH:
        raise NotPlain  # PlainTree finds it too deep, or not, as it did
    if kind is dict:
        structural, inner, env = where == 0 or where == 2, 1 if where == 0 else max(where, 2) + 1, key == "env"
        dropped = []
        for k, v in node.items():
            if type(k) is not str:
                raise NotPlain
            if problem := key_problem(k, key):
                raise TreeError(problem)
            if v is None and structural and k in NULL_MEANS_NONE:
                dropped.append(k)
            elif type(v) is str:
                if CONTROL.search(v) and (problem := text_problem(v, "env:" + k if env else k)):
                    raise TreeError(problem).with_parts(k)
            elif v is not None and type(v) not in _SCALARS:
                try:
                    check_in_place(v, "env:" + k if env else k, inner)
                except TreeError as e:
                    e.parts.append(k)
                    raise
        for k in dropped:
            del node[k]
    elif kind is list:
        inner = 2 if where == 1 else max(where, 2) + 1
        for i, v in enumerate(node):
            if type(v) is str:
                if CONTROL.search(v) and (problem := text_problem(v, key)):
                    raise TreeError(problem).with_parts(i)
            elif v is not None and type(v) not in _SCALARS:
                try:
                    check_in_place(v, key, inner)
                except TreeError as e:
                    e.parts.append(i)
                    raise
    elif kind is str:
        if problem := text_problem(node, key):
            raise TreeError(problem)
    elif node is not None and kind not in _SCALARS:
        raise NotPlain


_SCALARS = frozenset({bool, int, float})


def text_problem(text: str, key: str) -> str | None:
    """Why a string under `key` (`env:NAME` for an env value) is refused, or None."""
    multiline = key in MULTILINE or key.startswith("env:")
    bad = (_CONTROL_BUT_TAB_NEWLINE if multiline else CONTROL).search(text)
    if bad is None:
        return None
    allowed = "printable text, tabs and newlines" if multiline else "one line of printable text"
    name = key.removeprefix("env:") or "a value"
    return f"`{name}` contains the control character {bad[0]!r}; it must be {allowed}"


def key_problem(name: str, parent_key: str) -> str | None:
    """Why a mapping key is refused (under `env`, it must be a variable's name), or None."""
    if parent_key == "env":
        if not name:
            return "an environment variable name is empty"
        if "=" in name:
            return f"environment variable name {name!r} contains `=`"
    bad = CONTROL.search(name)
    return None if bad is None else f"key {name!r} contains the control character {bad[0]!r}"


class PlainTree:
    """A parsed tree as builtins, refusing control characters, bad env names and alias bombs.

    An alias is shared in a YAML tree but copied here, so what it copies is counted:
    a few hundred bytes of nested aliases would otherwise become gigabytes.
    """

    def __init__(self, error: Callable[[str, str], SpecError]):
        self.error, self.seen, self.alias_cost = error, set[int](), 0

    def convert(self, node: Any, chain: Chain = None, key: str = "", alias: Chain = None, depth: int = 0) -> Any:
        if isinstance(node, (dict, list)):
            if depth >= MAX_NESTING:
                raise self.error(NESTING_PROBLEM, field_path(chain))
            if alias is None and id(node) in self.seen:
                alias = chain[0] if chain else chain  # what holds the alias: its line is where `*name` is
            self.seen.add(id(node))
        if alias is not None:
            self.alias_cost += 1 + (len(node) // 64 if isinstance(node, str) else 0)
            if self.alias_cost > MAX_ALIAS_COST:
                raise self.error(ALIAS_PROBLEM, field_path(alias))
        if isinstance(node, dict):
            out = {}
            # Only the spec's own fields (the workflow's, and its jobs', files', ... ): never keys inside
            # free-form values (user data, metadata), whose nulls are theirs.
            structural = chain is None or (isinstance(chain[1], int) and chain[0] is not None and chain[0][0] is None)
            for k, v in node.items():
                k = k if isinstance(k, str) else str(k)
                if problem := key_problem(k, key):
                    raise self.error(problem, field_path(chain))
                if v is None and structural and k in NULL_MEANS_NONE:
                    continue
                out[k] = self.convert(v, (chain, k), f"env:{k}" if key == "env" else k, alias, depth + 1)
            return out
        if isinstance(node, list):
            return [self.convert(v, (chain, i), key, alias, depth + 1) for i, v in enumerate(node)]
        # ruamel's scalar subclasses (ScalarFloat, ScalarInt, quoted strings) as builtins
        for kind in (bool, int, float, str):
            if isinstance(node, kind):
                if isinstance(node, str) and (problem := text_problem(node, key)):
                    raise self.error(problem, field_path(chain))
                return kind(node)
        return node


def nests_too_deeply(tree: Any) -> bool:
    """Whether collections nest more than MAX_NESTING deep (walked without recursion, each shared
    node once: deeper through an alias, `PlainTree` finds it as it copies)."""
    stack, seen = [(tree, 0)], set[int]()
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        if depth >= MAX_NESTING:
            return True
        stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


def field_path(chain: Chain) -> str:
    parts: list[str] = []
    while chain is not None:
        chain, part = chain
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "$" + "".join(reversed(parts))
