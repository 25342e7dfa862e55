"""Common failure patterns found in job logs (out of memory, time limits, crashes, missing files,
full disks, lost connections, exceptions), for the MCP tool `analyze_workflow_logs`: one pass
over each log, a count per kind and the first lines found as samples."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_BYTES_PER_LOG = 4 << 20  # the end of a larger log is read: failures are reported last
MAX_SAMPLES = 10

# (kind, severity, pattern): the first that matches a line names it.
PATTERNS: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (kind, severity, re.compile(pattern, re.IGNORECASE))
    for kind, severity, pattern in (
        ("oom", "error", r"out of memory|oom[- ]?kill|killed process .* total-vm|MemoryError"),
        ("memory_allocation_failed", "error", r"cannot allocate memory|std::bad_alloc|failed to allocate"),
        ("time_limit", "error", r"due to time limit|time limit exceeded|walltime exceeded"),
        ("timeout", "error", r"timed out|\btimeout\b"),
        ("segfault", "error", r"segmentation fault|\bSIGSEGV\b|core dumped"),
        ("permission_denied", "error", r"permission denied|EACCES"),
        ("file_not_found", "error", r"no such file or directory|FileNotFoundError|ENOENT"),
        ("disk_full", "error", r"no space left on device|disk quota exceeded|ENOSPC"),
        (
            "connection_error",
            "error",
            r"connection (refused|reset|timed out)|network is unreachable|"
            r"could not resolve host|name or service not known",
        ),
        ("python_exception", "error", r"^Traceback \(most recent call last\)|^\w+(Error|Exception): "),
        ("rust_panic", "error", r"thread '.*' panicked at"),
        ("slurm_error", "error", r"^slurmstepd: error|srun: error|CANCELLED AT .* DUE TO"),
        ("warning", "warning", r"^\S*warning\b[:!]|\bWarning: "),
    )
)


@dataclass
class LogScan:
    files_parsed: int = 0
    error_count: int = 0
    warning_count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    files_with_errors: list[str] = field(default_factory=list)

    def add_text(self, path: str, text: str, whole: bool = True) -> None:
        """Count the patterns found in one log's text; `whole`: the text is all of the log, so
        its lines are numbered (else only its end was read, and samples carry no line number)."""
        self.files_parsed += 1
        had_error = False
        for number, line in enumerate(text.splitlines(), 1):
            kind, severity = classify_line(line)
            if kind is None:
                continue
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            if severity == "warning":
                self.warning_count += 1
                continue
            self.error_count += 1
            had_error = True
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(
                    {"file": path, "line": number if whole else None, "type": kind, "content": line.strip()[:500]}
                )
        if had_error:
            self.files_with_errors.append(path)


def classify_line(line: str) -> tuple[str | None, str | None]:
    for kind, severity, pattern in PATTERNS:
        if pattern.search(line):
            return kind, severity
    return None, None
