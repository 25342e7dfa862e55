"""Parameter sweeps: parse value specs, take the Cartesian product (or zip), fill templates."""

from __future__ import annotations

import ast
import functools
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal

# A placeholder is `{name}` or `{name:format_spec}`; anything else in braces
# (shell `${HOME}`, awk `{print $1}`) is left alone.
PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_]\w*)(?::([^{}]*))?\}")
RANGE = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?$")
_DECIMAL = r"-?(?:\d+\.?\d*|\.\d+)"
FLOAT_RANGE = re.compile(rf"^\s*({_DECIMAL})\s*:\s*({_DECIMAL})\s*(?::\s*({_DECIMAL})\s*)?$")

Scalar = int | float | str
MAX_FORMAT_WIDTH = 1000


class ParameterError(ValueError):
    pass


def parse_values(spec: object, max_values: int = 2_000_000) -> Sequence[Scalar]:
    """Values of one parameter: "1:10", "0:100:10" (inclusive), "[16,32]", "['a','b']".

    A range stays a `range`, so its size is known before anything is built.
    """
    if isinstance(spec, bool):
        raise ParameterError(f"expected a range or list, got {spec!r}")
    if isinstance(spec, (int, float)):
        return [spec]
    if isinstance(spec, list):
        values = spec
    elif isinstance(spec, str):
        m = RANGE.match(spec)
        if m:
            return _range(spec, m, max_values)
        if m := FLOAT_RANGE.match(spec):
            return _float_range(spec, m, max_values)
        text = spec.strip()
        if not (text.startswith("[") and text.endswith("]")):
            raise ParameterError(f"{_short(spec)} is neither a range like '1:10' or '0:100:10' nor a list like '[1,2]'")
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            values = _bare_list(text, spec)
        if not isinstance(values, list):
            raise ParameterError(f"cannot read list {_short(spec)}")
    else:
        raise ParameterError(f"expected a range or list, got {type(spec).__name__}")
    if not values:
        raise ParameterError("the list of values is empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ParameterError(f"value {v!r} is not a number or a string")
    if len(values) > max_values:
        raise ParameterError(f"the list has {len(values):,} values; the limit is {max_values:,}")
    return list(values)


def _bare_list(text: str, spec: str) -> list[Scalar]:
    """Torc's reading of a list that is not a literal: `[train, test]` holds words. Each item is
    an integer, else a number, else the text without its quotes."""
    values: list[Scalar] = []
    for item in (i.strip() for i in text[1:-1].split(",")):
        for kind in (int, float):
            try:
                values.append(kind(item))
                break
            except ValueError:
                continue
        else:
            word = item.strip("'\"")
            if not word or "[" in word or "]" in word:
                raise ParameterError(f"cannot read list {_short(spec)}: item {item!r}")
            values.append(word)
    return values


def _range(spec: str, m: re.Match[str], max_values: int) -> range:
    try:
        start, end = int(m[1]), int(m[2])
        step = int(m[3]) if m[3] is not None else 1
    except ValueError:  # more digits than int() reads
        raise ParameterError(f"range {_short(spec)} has numbers too large") from None
    if step <= 0:
        raise ParameterError(f"range {_short(spec)} needs a positive step")
    if end < start:
        raise ParameterError(f"range {_short(spec)} ends before it starts")
    count = (end - start) // step + 1
    if count > max_values:
        raise ParameterError(f"range {_short(spec)} has {count:,} values; the limit is {max_values:,}")
    return range(start, end + 1, step)


def _float_range(spec: str, m: re.Match[str], max_values: int) -> list[Scalar]:
    """Torc's float range `0.0:1.0:0.25` (step 1 by default, the end included): each value is
    start + i * step written with the decimals the range was written with, so 0.0:1.0:0.1 gives
    0.3 where adding 0.1 three times gives 0.30000000000000004; a whole value is written without
    `.0`, as Torc writes it (`1`, not `1.0`)."""
    written = [g for g in m.groups() if g is not None]
    start, end = float(written[0]), float(written[1])
    step = float(written[2]) if len(written) == 3 else 1.0
    if step <= 0:
        raise ParameterError(f"range {_short(spec)} needs a positive step")
    if end < start:
        raise ParameterError(f"range {_short(spec)} ends before it starts")
    # Counted exactly from the text written (floats lose the end at 1234567.8:1234567.9:0.01).
    count = int((Decimal(written[1]) - Decimal(written[0])) / Decimal(written[2] if len(written) == 3 else "1")) + 1
    if count > max_values:
        raise ParameterError(f"range {_short(spec)} has {count:,} values; the limit is {max_values:,}")
    decimals = max(len(g.partition(".")[2]) for g in written)
    values: list[Scalar] = []
    for i in range(count):
        v = round(start + i * step, decimals)
        values.append(int(v) if v.is_integer() else v)
    return values


def _short(spec: str) -> str:
    return repr(spec) if len(spec) <= 60 else repr(spec[:57] + "...")


def product_size(params: Mapping[str, Sequence[Scalar]], zipped: bool = False) -> int:
    """How many combinations: the product of the lengths, or (zipped) their common length."""
    if zipped:
        return zip_length(params)
    size = 1
    for values in params.values():
        size *= len(values)
    return size


def zip_length(params: Mapping[str, Sequence[Scalar]]) -> int:
    lengths = {name: len(values) for name, values in params.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n:,}" for name, n in lengths.items())
        raise ParameterError(
            f"parameter_mode zip pairs values by position, so every parameter needs as many values; here {listed}"
        )
    return next(iter(lengths.values()), 1)


def combinations(params: Mapping[str, Sequence[Scalar]], zipped: bool = False) -> Iterator[dict[str, Scalar]]:
    """Every combination of values (the Cartesian product), or (zipped) the first values
    together, then the second values, and so on."""
    names = list(params)
    columns = [params[n] for n in names]
    if zipped:
        zip_length(params)
    for combo in zip(*columns) if zipped else itertools.product(*columns):
        yield dict(zip(names, combo))


def placeholders(template: str) -> set[str]:
    return {m[1] for m in PLACEHOLDER.finditer(template)}


def fill(template: str, values: Mapping[str, Scalar]) -> str:
    """Replace `{name}` / `{name:spec}` for known names; leave other braces verbatim."""

    def sub(m: re.Match[str]) -> str:
        return format_placeholder(m, values[m[1]]) if m[1] in values else m[0]

    return PLACEHOLDER.sub(sub, template)


def longest_fill(template: str, params: Mapping[str, Sequence[Scalar]]) -> int:
    """The length of the longest string `fill` makes of `template` with any of these values,
    found without building them: a range's widest value is one of its ends."""
    length = len(template)
    for m in PLACEHOLDER.finditer(template):
        values = params.get(m[1])
        if values is not None:
            ends = (values[0], values[-1]) if isinstance(values, range) else values
            length += max(len(format_placeholder(m, v)) for v in ends) - len(m[0])
    return length


def format_placeholder(m: re.Match[str], value: Scalar) -> str:
    if m[2] and _too_wide(m[2]):  # format() would build the whole padded string first
        raise ParameterError(f"'{m[0]}' asks for a width or precision over {MAX_FORMAT_WIDTH}")
    try:
        return format(value, m[2] or "")
    except (ValueError, TypeError, OverflowError) as e:
        raise ParameterError(f"cannot format {m[1]}={value!r} with '{m[0]}': {e}") from None


def format_text(m: re.Match[str], value: Scalar) -> str:
    """`format_placeholder`, where text that reads as a number is formatted as one if the format
    is a number's (`{n:03d}` with n = "7"); text is otherwise kept as written ("3.10", "007")."""
    try:
        return format_placeholder(m, value)
    except ParameterError:
        if isinstance(value, str):
            for kind in (int, float):
                try:
                    return format_placeholder(m, kind(value))
                except (ValueError, ParameterError):
                    continue
        raise


def fill_text(template: str, values: Mapping[str, Scalar]) -> str:
    """`fill`, formatting with `format_text`."""
    return PLACEHOLDER.sub(lambda m: format_text(m, values[m[1]]) if m[1] in values else m[0], template)


@functools.cache
def _too_wide(format_spec: str) -> bool:
    return any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"\d+", format_spec))


_DIGITS = re.compile(r"[0-9]+")


def name_template(name: str) -> str:
    """The template a job's name was likely made from, for a job listed without parameters:
    each run of ASCII digits becomes `{n}` (`job_17` -> `job_{n}`; `prep` stays `prep`)."""
    return _DIGITS.sub("{n}", name)
