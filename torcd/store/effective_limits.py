"""A job's effective limits for its next attempt, as SQL: its own limit grown by the multipliers
applied in this run (`memory_scale`, `runtime_scale`), capped like any limit a user may give.
Every query that reads an effective limit uses these, so a claim, a plan and a change all see
the same number."""

from __future__ import annotations

from torcd.core.resources import MAX_MEMORY, MAX_RUNTIME


def effective_memory(alias: str = "j") -> str:
    """Whole bytes; NULL when the job sets no memory limit."""
    p = f"{alias}." if alias else ""
    return f"min(CAST({p}memory_bytes * {p}memory_scale AS INTEGER), {MAX_MEMORY})"


def effective_runtime(alias: str = "j") -> str:
    """Seconds; NULL when the job sets no runtime limit."""
    p = f"{alias}." if alias else ""
    return f"min({p}runtime_seconds * {p}runtime_scale, {MAX_RUNTIME!r})"
