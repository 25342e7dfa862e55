"""Every error of a spec at once (up to a cap), for `validate`: a spec with three mistakes
should not need three runs.

Validation stops at the first error, so each error found sets its field aside (a key is
removed; a job is replaced by a stand-in of the same name, so that what names it still
finds it; a list of plain values goes whole) and the spec is checked again. Indices never
shift, so every later error still names its own line. Errors that follow from one set aside may
appear too; each names its line, and they come sorted by it.
"""

from __future__ import annotations

import re
import time
from typing import Any

from torcd.errors import SpecError
from torcd.spec.load import Locator
from torcd.spec.parse import load_plain, parse_tree

MAX_ERRORS = 50
TIME_BUDGET = 10.0  # seconds of checking again, at most
_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def spec_errors(
    text: str, file: str, fmt: str | None = None, loaded: tuple[dict, Locator] | None = None
) -> list[SpecError]:
    """The spec's errors in line order, at most MAX_ERRORS; empty if it is valid. `loaded`: the
    text as `load_plain` read it, if it was (its tree is changed here)."""
    try:
        tree, loc = loaded or load_plain(text, file, fmt)
    except SpecError as e:
        return [e]  # it does not read at all: the first error is all there is
    errors: list[SpecError] = []
    deadline = time.monotonic() + TIME_BUDGET
    while len(errors) < MAX_ERRORS and time.monotonic() < deadline:
        try:
            parse_tree(tree, loc)
            break
        except SpecError as e:
            if any(seen.field == e.field for seen in errors):
                break  # setting it aside did not help: what is left is not worth guessing at
            if not set_aside(tree, e.field):
                errors.append(e)
                break
            # An error about what holds an earlier one's field (`rules[0]` after `rules[0].exit_codes`)
            # follows from setting that one aside: set it aside too, but do not report it.
            if not any(_holds(e.field, seen.field) for seen in errors):
                errors.append(e)
    return sorted(errors, key=lambda e: (e.line or 0, e.field or ""))


# What stands in for a list's element set aside: valid, and with the same name, so that what
# names it (a job's failure_handler, depends_on, files) still finds it.
_STAND_INS: dict[str, dict[str, Any]] = {
    "jobs": {"command": "true"},
    "failure_handlers": {"rules": [{"match_all_exit_codes": True}]},
    "rules": {"match_all_exit_codes": True},
    "files": {"path": "set-aside"},
    "user_data": {},
    "resource_requirements": {},
    "slurm_schedulers": {},
    "actions": {"trigger_type": "on_workflow_complete", "action_type": "run_commands", "commands": ["true"]},
}


def _holds(outer: str | None, inner: str | None) -> bool:
    """Whether the field `outer` holds the field `inner` (`$.a[0]` holds `$.a[0].b`, not `$.ab`)."""
    if not outer or not inner:
        return False
    return inner == outer or inner.startswith((outer + ".", outer + "["))


def set_aside(tree: dict, field: str | None) -> bool:
    """Take the field at this path out of the tree (a key removed, a named element replaced by a
    stand-in of its name, a list of plain values removed whole); False where that cannot be done."""
    if not field or not field.startswith("$"):
        return False
    matches = list(_STEP.finditer(field))
    if not matches or "".join(m[0] for m in matches) != field[1:]:
        return False
    steps = [m[1] if m[1] is not None else int(m[2]) for m in matches]
    parent: Any = tree
    for step in steps[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return False
    last = steps[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if not (isinstance(parent, list) and isinstance(last, int) and last < len(parent)):
        return False
    kind = steps[-2] if len(steps) > 1 else None
    if kind not in _STAND_INS:  # a plain value (an exit code, a dependency): its whole list goes,
        holder: Any = tree  # so no later value moves into its place
        for step in steps[:-2]:
            holder = holder[step]
        if isinstance(holder, dict) and kind in holder:
            del holder[kind]
            return True
        return False
    old = parent[last]
    name = old.get("name") if isinstance(old, dict) else None
    stand_in = dict(_STAND_INS[kind])
    if kind != "rules" and kind != "actions":
        stand_in["name"] = name if isinstance(name, str) and name else f"set_aside_{last}"
    parent[last] = stand_in
    return stand_in != old
