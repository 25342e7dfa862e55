"""Parameter sweeps: parse value specs, take the Cartesian product, fill templates."""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator, Mapping

# A placeholder is `{name}` or `{name:format_spec}`; anything else in braces
# (shell `${HOME}`, awk `{print $1}`) is left alone.
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_]\w*)(?::([^{}]*))?\}")
_RANGE = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?$")

Scalar = int | float | str


class ParameterError(ValueError):
    pass


def parse_values(spec: object) -> list[Scalar]:
    """Values of one parameter: "1:10", "0:100:10" (inclusive), "[16,32]", "['a','b']"."""
    if isinstance(spec, bool):
        raise ParameterError(f"expected a range or list, got {spec!r}")
    if isinstance(spec, (int, float)):
        return [spec]
    if isinstance(spec, list):
        values = spec
    elif isinstance(spec, str):
        m = _RANGE.match(spec)
        if m:
            start, end = int(m[1]), int(m[2])
            step = int(m[3]) if m[3] is not None else 1
            if step <= 0:
                raise ParameterError(f"range {spec!r} needs a positive step")
            if end < start:
                raise ParameterError(f"range {spec!r} ends before it starts")
            return list(range(start, end + 1, step))
        text = spec.strip()
        if not (text.startswith("[") and text.endswith("]")):
            raise ParameterError(
                f"{spec!r} is neither a range like '1:10' or '0:100:10' nor a list like '[1,2]'")
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ParameterError(f"cannot read list {spec!r}") from None
        if not isinstance(values, list):
            raise ParameterError(f"cannot read list {spec!r}")
    else:
        raise ParameterError(f"expected a range or list, got {type(spec).__name__}")
    if not values:
        raise ParameterError("the list of values is empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ParameterError(f"value {v!r} is not a number or a string")
    return list(values)


def product_size(params: Mapping[str, list[Scalar]]) -> int:
    size = 1
    for values in params.values():
        size *= len(values)
    return size


def combinations(params: Mapping[str, list[Scalar]]) -> Iterator[dict[str, Scalar]]:
    names = list(params)
    for combo in itertools.product(*(params[n] for n in names)):
        yield dict(zip(names, combo))


def placeholders(template: str) -> set[str]:
    return {m[1] for m in _PLACEHOLDER.finditer(template)}


def fill(template: str, values: Mapping[str, Scalar]) -> str:
    """Replace `{name}` / `{name:spec}` for known names; leave other braces verbatim."""

    def sub(m: re.Match[str]) -> str:
        name, fmt = m[1], m[2]
        if name not in values:
            return m[0]
        try:
            return format(values[name], fmt or "")
        except (ValueError, TypeError) as e:
            raise ParameterError(f"cannot format {name}={values[name]!r} with '{{{m[0][1:-1]}}}': {e}") from None

    return _PLACEHOLDER.sub(sub, template)
