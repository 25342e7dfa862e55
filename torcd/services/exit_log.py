"""The exit log: the shepherd appends `JOB RUN ATTEMPT RC` to it as each job shell ends.

A daemon that is alive hears how its jobs end from the shepherd and never reads it.
A daemon restarted after a crash reads it to learn how the jobs that ended
while it was down exited, and how the jobs it adopts end. Appending a line
to one file is much cheaper than creating and removing a file per job.
"""

from __future__ import annotations

import os

Key = tuple[int, int, int]  # job_id, run_id, attempt_id

ROTATE_EVERY = 500_000  # lines; the previous file is kept, so nothing recent is lost


class ExitLog:
    def __init__(self, path: str):
        self.path, self.previous = path, path + ".prev"
        self._since_rotation = 0
        # It changes little once rotated (a line the shepherd began writing just before): read
        # again only when its size has changed.
        self._previous_statuses: tuple[int, dict[Key, int]] | None = None

    def rotate(self) -> None:
        """Start a fresh log; the current one becomes the previous (whose lines stay readable)."""
        try:
            os.replace(self.path, self.previous)
        except FileNotFoundError:
            pass
        # Made here, private, before the shepherd appends to it.
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        self._since_rotation = 0
        self._previous_statuses = None

    def count(self, exits: int) -> None:
        self._since_rotation += exits
        if self._since_rotation >= ROTATE_EVERY:
            self.rotate()

    def statuses(self) -> dict[Key, int]:
        try:
            size = os.stat(self.previous).st_size
        except FileNotFoundError:
            size = -1
        if self._previous_statuses is None or self._previous_statuses[0] != size:
            self._previous_statuses = (size, _read(self.previous))
        return {**self._previous_statuses[1], **_read(self.path)}

    def status(self, key: Key) -> int | None:
        return self.statuses().get(key)


def _read(path: str) -> dict[Key, int]:
    found: dict[Key, int] = {}
    try:
        with open(path, "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4 and all(p.isdigit() for p in parts):
                    found[(int(parts[0]), int(parts[1]), int(parts[2]))] = int(parts[3])
    except FileNotFoundError:
        pass
    return found
