"""Which file holds a job attempt's output (as its stdio mode left it), and reading its end."""

from __future__ import annotations

import os
from collections.abc import Iterable

from torcd.protocol import AttemptInfo as Attempt


def attempt_log_path(
    attempts: Iterable[Attempt],
    attempt_id: int | None = None,
    stream: str = "stdout",
    *,
    run_id: int | None = None,
    recovery: bool = False,
    job_id: int | None = None,
) -> str:
    """Which of a job's attempts' logs: the last attempt (of the last run) unless one is named."""
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
    atts = [
        a
        for a in attempts
        if (run_id is None or a.run_id == run_id) and (attempt_id is None or a.attempt_id == attempt_id)
    ]
    if not atts:
        raise ValueError(f"job {job_id} has no such attempt")
    last = atts[-1]
    path = last.stderr_path if stream == "stderr" else last.stdout_path
    if recovery:  # the recovery script's logs sit beside the job's, named alike, always .o and .e
        known = last.stdout_path or last.stderr_path
        if not known:
            raise ValueError(f"job {job_id} keeps no logs (stdio mode none), so no recovery log is known")
        folder, name = os.path.split(os.path.splitext(known)[0])
        return os.path.join(folder, "recovery_" + name.removeprefix("job_") + (".e" if stream == "stderr" else ".o"))
    if not path:
        raise ValueError(f"job {job_id}'s {stream} is not kept (its stdio mode sends it to /dev/null)")
    return path


def read_log(path: str, max_bytes: int) -> str:
    from torcd.services.job_logs import open_log_for_reading

    with open_log_for_reading(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            f.seek(size - max_bytes)
        return f.read(max_bytes).decode(errors="replace")
