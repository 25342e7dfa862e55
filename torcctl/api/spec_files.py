"""A spec handed to the client as a path, a text, a dict or a WorkflowSpec, made into the text
the daemon reads; and every error of a spec the daemon refuses."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from torcctl.errors import SpecError, SpecProblem
from torcd.protocol import MAX_SPEC_BYTES

if TYPE_CHECKING:
    from torcctl.spec_builder import WorkflowSpec

SPEC_SUFFIXES = (".yaml", ".yml", ".json", ".json5", ".kdl")


def spec_text(
    spec: str | os.PathLike[str] | Mapping[str, Any] | WorkflowSpec, spec_format: str | None = None
) -> tuple[str, str, str | None]:
    """A spec as (text, the name errors give it, format)."""
    from torcctl.spec_builder import WorkflowSpec

    if isinstance(spec, WorkflowSpec):
        spec = spec.to_dict()
    if isinstance(spec, Mapping):
        try:
            return msgspec.json.encode(spec).decode(), "<dict>", "json"
        except (TypeError, msgspec.EncodeError) as e:
            raise TypeError(f"the spec dict holds a value that is not JSON: {e}") from None
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _names_a_file(spec)):
        path = os.fspath(spec)
        return read_spec_file(path), path, spec_format
    if isinstance(spec, str):
        if spec_format is None and "\n" not in spec.strip() and not any(c in spec for c in ":{"):
            # one line that no spec format could be: a mistyped path
            raise FileNotFoundError(f"no spec file {spec!r} (a spec's text would hold at least a key and a value)")
        return spec, "<text>", spec_format
    raise TypeError(f"a spec is a path, a text, a dict or a WorkflowSpec, not {type(spec).__name__}")


def _names_a_file(text: str) -> bool:
    if "\n" in text or not text.strip():
        return False
    return os.path.exists(text) or text.lower().endswith(SPEC_SUFFIXES)


def read_spec_file(path: str, name: str | None = None) -> str:
    """The spec's text; `name` calls it something else than its path in errors."""
    name = name or path
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_SPEC_BYTES + 1)  # a spec pointed at /dev/zero must not fill memory
    except OSError as e:  # the same kind of error, saying which spec
        raise type(e)(f"cannot read spec {name}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"spec {name} is not UTF-8 text: {e}") from None
    if len(text) > MAX_SPEC_BYTES:
        raise ValueError(f"spec {name} is larger than {MAX_SPEC_BYTES // 2**20} MiB")
    return text


def every_error(refusal: SpecError, text: str, path: str, fmt: str | None) -> SpecError:
    """The daemon names the first error; list them all, as `validate` does."""
    from torcd.spec.errors import spec_errors

    found = spec_errors(text, path, fmt)
    if not found:  # the daemon's own check (an input file that is missing): its one error
        return refusal
    problems = [SpecProblem(str(e), e.file, e.line, e.field) for e in found]
    return SpecError(refusal.code, problems[0].message, refusal.data, problems)
