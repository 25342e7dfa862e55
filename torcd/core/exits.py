"""An attempt's exit: one value from the process that ended, through the worker's journal and
the wire, to the store; and the exit codes that mean something of their own.

No store behind it: the daemon, the worker and the client share it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

# Every integer that reaches SQLite fits its 64-bit signed INTEGER; a larger one is invalid params.
MAX_SQL_INT = 2**63 - 1
Id = Annotated[int, Meta(ge=1, le=MAX_SQL_INT)]
Cause = Literal["timeout", "oom", "missing_output"]
# A time a worker reports: what a clock can show (1970 to the end of year 9999), never inf or
# 1e308; the daemon then keeps it within the attempt it closes.
WorkerTime = Annotated[float, Meta(ge=0, le=253402300799.0)]

SIGNAL_EXIT = 128  # a shell reports death by signal S as 128 + S
SIGKILL_EXIT = SIGNAL_EXIT + 9  # 137: killed (by us, the kernel's OOM killer, or a lost node)
SIGTERM_EXIT = SIGNAL_EXIT + 15  # 143: stopped
SIGXCPU_EXIT = SIGNAL_EXIT + 24  # 152: what Slurm's time limit leaves
CANNOT_EXECUTE = 126  # the shell's "cannot execute": the command never got to run
NOT_FOUND = 127  # the shell's "command not found"
UNKNOWN_EXIT = SIGKILL_EXIT  # as if SIGKILLed: what ends a shell without letting it record its status


def signal_return_code(returncode: int) -> int:
    """Map a subprocess returncode to a shell-style code (killed by S -> 128+S)."""
    return SIGNAL_EXIT - returncode if returncode < 0 else returncode


class Exit(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How an attempt ended. The worker sends these in its poll (`exits`) and keeps them in its
    journal, so the fields, their order and their bounds are the wire format: change none."""

    job_id: Id
    run_id: Id
    attempt_id: Id
    return_code: Annotated[int, Meta(ge=0, le=255)]
    end_time: WorkerTime
    message: str | None = None
    cause: Cause | None = None  # why it failed, beyond its exit code
    peak_memory: Annotated[int, Meta(ge=0, le=1 << 50)] | None = None  # bytes (a pebibyte at most)
    cpu_seconds: Annotated[float, Meta(ge=0, le=1e12)] | None = None
