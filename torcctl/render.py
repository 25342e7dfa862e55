"""Output: tables and lines for people, JSON for scripts."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence

import msgspec

from torcd.protocol import Event


def print_json(value) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def table(headers: Sequence[str], rows: Iterable[Sequence], title: str | None = None) -> None:
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    tty = sys.stdout.isatty()
    if title:
        print(title)
    plain = all(headers) and all(len(r) == len(headers) and all(_plain(c) for c in r) for r in [headers, *cells])
    if not tty and plain:
        sys.stdout.write(aligned(headers, cells))  # what rich prints here, without its cost per cell
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(*headers, box=None, header_style="bold", pad_edge=False)
    for row in cells:
        t.add_row(*row)
    # Off a terminal nothing is cut short: scripts and pipes get whole paths.
    Console(width=None if tty else 100_000, highlight=False, markup=False, emoji=False).print(t)


def _plain(text: str) -> bool:
    """One line of printable ASCII: a column as wide as its longest text (anything else: rich)."""
    return text.isascii() and text.isprintable()


def aligned(headers: Sequence[str], rows: list[list[str]]) -> str:
    """Rows of plain cells as rich's borderless table prints them off a terminal: each cell
    padded to its column's width, columns two spaces apart."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + "\n" for row in [headers, *rows])


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def event_line(e: Event) -> str:
    parts = [when(e.time), f"#{e.seq}", e.kind]
    if e.job_name:
        parts.append(f"{e.job_name} (job {e.job_id}" + (f", attempt {e.attempt_id})" if e.attempt_id else ")"))
    if e.return_code is not None:
        parts.append(f"rc={e.return_code}")
    if e.rule_index is not None:
        parts.append(f"actions[{e.rule_index}]" if e.kind.startswith("action_") else f"rule={e.rule_index}")
    if e.action:
        parts.append(f"action={e.action}")
    if e.status and e.kind not in ("job_completed",):
        parts.append(f"-> {e.status}")
    if e.job_count is not None:  # the workflow's kinds
        parts.append(f"{e.job_count} jobs")
    if e.source:
        parts.append(f"by {e.source}")
    if e.message:
        parts.append(f"— {e.message}")
    return "  ".join(parts)


def seek_last_lines(f, n: int, block: int = 64 * 1024) -> None:
    """Position `f` at the start of its last `n` lines, reading backwards a block at a time."""
    end = f.seek(0, os.SEEK_END)
    if n == 0:
        return
    pos, newlines = end, 0
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step)
        if pos + step == end and data.endswith(b"\n"):
            data = data[:-1]  # the final newline ends the last line; it does not start one
        i = len(data)
        while (i := data.rfind(b"\n", 0, i)) >= 0:
            newlines += 1
            if newlines == n:
                f.seek(pos + i + 1)
                return
    f.seek(0)
