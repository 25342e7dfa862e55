"""Job statuses and the only transitions the daemon may make between them.

Everything that changes a job's status goes through `check_transition`; a
pair that is not in ALLOWED is a bug or a bad request, never silently applied.
"""

from __future__ import annotations

import enum

from torcd.errors import InvalidTransition


class JobStatus(enum.IntEnum):
    UNINITIALIZED = 0
    BLOCKED = 1
    READY = 2
    PENDING = 3
    RUNNING = 4
    COMPLETED = 5
    FAILED = 6
    CANCELED = 7
    TERMINATED = 8
    DISABLED = 9
    PENDING_FAILED = 10
    RECOVERING = 11  # its recovery script is running

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> JobStatus:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown status {text!r} (one of: {names})") from None


S = JobStatus

FAILED_LIKE = frozenset({S.FAILED, S.CANCELED, S.TERMINATED, S.PENDING_FAILED})
# A job in one of these can still make progress without a person.
ACTIVE = frozenset({S.READY, S.PENDING, S.RUNNING, S.RECOVERING})
# Nothing happens to these jobs again unless someone resets them.
FINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELED, S.TERMINATED, S.DISABLED})

_RESET_TARGETS = {S.BLOCKED, S.READY}

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    S.UNINITIALIZED: frozenset({S.BLOCKED, S.READY, S.CANCELED, S.DISABLED}),
    S.BLOCKED: frozenset({S.READY, S.CANCELED}),
    S.READY: frozenset({S.PENDING, S.RUNNING, S.CANCELED, S.BLOCKED}),
    S.PENDING: frozenset({S.RUNNING, S.READY, S.CANCELED, S.TERMINATED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.TERMINATED, S.CANCELED, S.READY, S.RECOVERING, S.PENDING_FAILED}),
    S.RECOVERING: frozenset({S.READY, S.FAILED, S.CANCELED}),
    S.COMPLETED: frozenset(_RESET_TARGETS),
    S.FAILED: frozenset(_RESET_TARGETS),
    S.CANCELED: frozenset(_RESET_TARGETS),
    S.TERMINATED: frozenset(_RESET_TARGETS),
    S.DISABLED: frozenset(),
    S.PENDING_FAILED: frozenset({S.READY, S.FAILED, S.CANCELED} | _RESET_TARGETS),
}


def can_transition(old: JobStatus, new: JobStatus) -> bool:
    return new in ALLOWED[old]


def check_transition(old: JobStatus, new: JobStatus, job_id: int | None = None) -> None:
    """Raise InvalidTransition unless old -> new is allowed."""
    if new not in ALLOWED[old]:
        where = f"job {job_id}: " if job_id is not None else ""
        raise InvalidTransition(f"{where}cannot go from {old.label} to {new.label}")
