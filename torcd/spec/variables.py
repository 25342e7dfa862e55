"""Torc's workflow `variables`: constants written once and referenced as `{name}` (or
`{name:format}`) in any text of the spec; each reference becomes the value before anything
else reads the spec. They never multiply jobs, as parameters do.

As in Torc: names are identifiers and may not be a parameter's name; values are text (a
number is taken as its text) and may not refer to variables; `${...}` is the shell's (or a
`${files...}` reference), never a variable; mapping keys, `parameters` keys and
`use_parameters` entries are left as written. Where a spec has variables, a `{name}` that is
neither a variable nor a parameter anywhere in the spec is an error naming its field, where
Torc would leave it to the shell (a misspelled variable would otherwise run as text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from torcd.core import params as P
from torcd.spec.plain import field_path

# Text the references may add to the spec, all told: a 100 KB value in a million commands
# would otherwise be 100 GB.
MAX_ADDED_BYTES = 128 * 2**20
_LEFT_AS_WRITTEN = frozenset({"use_parameters"})  # lists of parameter names, not text

Error = Callable[[str, str], Exception]


def declared(tree: dict, error: Error) -> dict[str, str]:
    """The spec's variables, checked: each name and its value as text."""
    variables = tree.get("variables")
    return {} if variables is None else _checked(variables, error)


def apply_variables(tree: dict, variables: dict[str, str], error: Error) -> dict:
    """The spec's tree with its variables' references filled in (a new tree; `tree` is not
    changed), or `tree` itself when it has none."""
    if not variables:
        return tree
    parameters = parameter_names(tree)
    for name in variables:
        if name in parameters:
            raise error(
                f"variable {name!r} is also a parameter's name: rename one (a reference could mean either)",
                f"$.variables.{name}",
            )
    return _Filler(variables, parameters, error).tree(tree)


def fill_variables(text: str, variables: dict[str, str], field: str, error: Error) -> str:
    """`text` (a path) with its variables filled in; a `{name}` that is not one is an error."""
    if not variables or "{" not in text:
        return text
    return _Filler(variables, set(), error).text(text, _chain(field))


def _chain(field: str) -> Any:
    """A field path (`$.jobs[0].parameters_file`) as the chain `field_path` prints back."""
    chain: Any = None
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", field):
        chain = (chain, name or int(index))
    return chain


def parameter_names(tree: dict) -> set[str]:
    """Every parameter's name in the spec: the workflow's and each job's, file's and user data's."""
    names = set(_keys(tree.get("parameters")))
    for section in ("jobs", "files", "user_data"):
        entries = tree.get(section)
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, dict):
                    names.update(_keys(entry.get("parameters")))
    return names


def _keys(value: Any) -> Iterable[str]:
    return value.keys() if isinstance(value, dict) else ()


def _checked(variables: Any, error: Error) -> dict[str, str]:
    if not isinstance(variables, dict):
        raise error("`variables` must be a mapping of names to values", "$.variables")
    out = {}
    for name, value in variables.items():
        at = f"$.variables.{name}"
        if not name.isidentifier() or not name.isascii():
            raise error(f"variable name {name!r} is not a name (letters, digits and `_`, not first a digit)", at)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise error(f"variable {name!r} must be text or a number, not {type(value).__name__}", at)
        text = value if isinstance(value, str) else str(value)
        if refers := P.placeholders(text):
            raise error(f"variable {name!r} refers to {{{min(refers)}}}: a value may not refer to variables", at)
        out[name] = text
    return out


class _Filler:
    def __init__(self, variables: dict[str, str], parameters: set[str], error: Error):
        self.variables, self.parameters, self.error, self.added = variables, parameters, error, 0

    def tree(self, root: dict) -> dict:
        return {k: v if k == "variables" else self.value(v, (None, k)) for k, v in root.items()}

    def value(self, node: Any, chain: Any) -> Any:
        if isinstance(node, str):
            return self.text(node, chain) if "{" in node else node
        if isinstance(node, dict):
            key = chain[1] if chain is not None else None
            if key in _LEFT_AS_WRITTEN:
                return node
            return {k: self.value(v, (chain, k)) for k, v in node.items()}
        if isinstance(node, list):
            if chain is not None and chain[1] in _LEFT_AS_WRITTEN:
                return node
            return [self.value(v, (chain, i)) for i, v in enumerate(node)]
        return node

    def text(self, text: str, chain: Any) -> str:
        def fill(m: Any) -> str:
            name = m[1]
            if name in self.variables:
                try:
                    value = P.format_text(m, self.variables[name])
                except P.ParameterError as e:
                    raise self.error(str(e), field_path(chain)) from None
                self.added += len(value)
                if self.added > MAX_ADDED_BYTES:
                    raise self.error(
                        f"variables add more than {MAX_ADDED_BYTES // 2**20} MiB of text to the spec", field_path(chain)
                    )
                return value
            if name in self.parameters:
                return m[0]
            raise self.error(
                f"unknown name {{{name}}}: it is neither in `variables` nor a parameter "
                "(write `${" + name + "}` for the shell's variable)",
                field_path(chain),
            )

        return P.PLACEHOLDER.sub(fill, text)
