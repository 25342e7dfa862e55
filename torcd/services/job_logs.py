"""What a person sees of a failed job without opening its logs: the last lines of its stderr."""

from __future__ import annotations

import os
from collections import deque

from torcd.protocol import JobInfo

SHOWN_FOR = ("pending_failed", "failed")


def stderr_tail(path: str | None, lines: int = 5, max_bytes: int = 4096) -> str | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode(errors="replace")
    except (OSError, ValueError):  # unreadable, or a path no file can have (a NUL byte)
        return None
    return "\n".join(deque(data.splitlines(), maxlen=lines)) or None


def with_tails(jobs: list[JobInfo], only_failed: bool = True) -> list[JobInfo]:
    for job in jobs:
        if not only_failed or job.status in SHOWN_FOR:
            job.stderr_tail = stderr_tail(job.stderr_path)
    return jobs
