"""What happened to an attempt, as the executors, workers and the retry engine report it.

Plain values shared by the daemon, the worker and the client; no store behind them.
"""

from __future__ import annotations

import os

import msgspec

from torcd.core.retry import Rule
from torcd.protocol import Runnable


class Exit(msgspec.Struct, frozen=True):
    job_id: int
    run_id: int
    attempt_id: int
    return_code: int
    end_time: float
    message: str | None = None
    workflow_id: int = 0
    cause: str | None = None  # timeout, oom, missing_output
    peak_memory: int | None = None  # bytes
    cpu_seconds: float | None = None


class Start(msgspec.Struct, frozen=True):
    """A claimed job whose process the executor started (pid None: it could not start)."""

    job: Runnable
    pid: int | None
    time: float


class Failure(msgspec.Struct, frozen=True):
    """A recorded non-zero exit still waiting for its failure-handler decision."""

    job_id: int
    workflow_id: int
    run_id: int
    attempt_id: int
    return_code: int
    rules: list[Rule] | None
    use_pending_failed: bool | None
    cause: str | None = None  # timeout, oom, missing_output


def stdio_paths(output_dir: str, prefix: str, wf: int, job: int, run: int, attempt: int) -> tuple[str, str]:
    """Where an attempt's stdout and stderr go (`prefix` job or recovery)."""
    base = os.path.join(output_dir, "job_stdio", f"{prefix}_wf{wf}_j{job}_r{run}_a{attempt}")
    return base + ".o", base + ".e"
