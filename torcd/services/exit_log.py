"""The exit log: job shells append `JOB RUN ATTEMPT RC` to it as they end.

A daemon that is alive learns exit codes from the kernel and never reads it.
A daemon restarted after a crash reads it to learn how the jobs that ended
while it was down exited, and how the jobs it adopts end. Appending a line
to one file is much cheaper than creating and removing a file per job.
"""

from __future__ import annotations

import os
import shlex
import shutil

from torcd.services.processes import BASH

Key = tuple[int, int, int]  # job_id, run_id, attempt_id

# Signals that end bash by default. The recording shell catches each (a caught signal goes back
# to its default in the command's shell), so a signal ends the command, and the recording shell
# then records how the command ended rather than dying unrecorded itself.
# The parent: dash where there is one (it starts in half the time bash takes), else bash.
RECORDER = shutil.which("dash") or BASH
_CAUGHT = "HUP INT QUIT PIPE ALRM TERM USR1 USR2 XCPU XFSZ VTALRM PROF"
ROTATE_EVERY = 500_000  # lines; the previous file is kept, so nothing recent is lost


class ExitLog:
    def __init__(self, path: str):
        self.path, self.previous = path, path + ".prev"
        self._since_rotation = 0
        self._previous_statuses: dict[Key, int] | None = None  # it no longer changes: read it once

    def recording(self, prelude: str, key: Key) -> str:
        """A script for `RECORDER` that runs, after `prelude`, `bash -c "$1"` (the command given
        as its first argument), and appends the command's exit status to the log as it ends.

        A parent shell rather than a trap in the command's own shell: a command that sets its
        own `trap ... EXIT` (or replaces its shell with `exec`) cannot take the record away,
        and it still runs exactly as `bash -c COMMAND` ($$, $0, $LINENO, its arguments)."""
        line = f'echo "{key[0]} {key[1]} {key[2]} $?" >> {shlex.quote(self.path)}'
        return f'trap {shlex.quote(line)} EXIT; trap : {_CAUGHT}; {prelude}{shlex.quote(BASH)} -c -- "$1"; exit'

    def rotate(self) -> None:
        """Start a fresh log; the current one becomes the previous (whose lines stay readable)."""
        try:
            os.replace(self.path, self.previous)
        except FileNotFoundError:
            pass
        # Made here, private, before any job shell appends to it (a shell would create it with
        # the user's umask, readable by others).
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        self._since_rotation = 0
        self._previous_statuses = None

    def count(self, exits: int) -> None:
        self._since_rotation += exits
        if self._since_rotation >= ROTATE_EVERY:
            self.rotate()

    def statuses(self) -> dict[Key, int]:
        if self._previous_statuses is None:
            self._previous_statuses = _read(self.previous)
        return {**self._previous_statuses, **_read(self.path)}

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
