"""The attempts as a timeline (a Gantt chart), one lane per host, as a standalone SVG.

At scale only the last `MAX_BARS` attempts (by start) are drawn; lanes are capped at `MAX_HOSTS`
hosts (those with the most attempts; the rest share one lane) and attempts that overlap on a host
stack in at most `MAX_ROWS` rows (beyond that they overlap). The subtitle says what was left out."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from torcd.plots.svg import (
    OUTCOME_COLOURS,
    LinearScale,
    document,
    esc,
    format_seconds,
    legend,
    linear_second_ticks,
    num,
)
from torcd.protocol import AttemptInfo

MAX_BARS = 5_000
MAX_HOSTS = 30
MAX_ROWS = 6
WIDTH, LEFT, RIGHT, TOP = 900, 170, 880, 60
ROW, GAP = 10, 6
UNKNOWN_HOST = "(unknown host)"


def attempt_outcome(a: AttemptInfo) -> str:
    if a.end_time is None:
        return "running"
    if a.cause in ("oom", "timeout"):
        return a.cause
    return "ok" if a.return_code == 0 else "failed"


def _lanes(shown: list[AttemptInfo]) -> tuple[dict[str, list[list[AttemptInfo]]], int]:
    """Host -> rows of attempts that do not overlap (greedy, in order of start); and how many hosts
    were folded into the last lane."""
    per_host = collections.Counter(a.host or UNKNOWN_HOST for a in shown)
    kept = {h for h, _ in per_host.most_common(MAX_HOSTS if len(per_host) <= MAX_HOSTS else MAX_HOSTS - 1)}
    folded = len(per_host) - len(kept)
    other = f"{folded:,} other hosts"
    lanes: dict[str, list[list[AttemptInfo]]] = {}
    ends: dict[str, list[float]] = {}
    for a in shown:
        host = a.host or UNKNOWN_HOST
        host = host if host in kept else other
        rows, row_ends = lanes.setdefault(host, []), ends.setdefault(host, [])
        end = a.end_time if a.end_time is not None else float("inf")
        free = next((i for i, e in enumerate(row_ends) if e <= a.start_time), None)
        if free is None and len(rows) < MAX_ROWS:
            rows.append([])
            row_ends.append(end)
            free = len(rows) - 1
        elif free is None:
            free = min(range(len(rows)), key=row_ends.__getitem__)
        rows[free].append(a)
        row_ends[free] = max(row_ends[free], end)
    ordered = dict(sorted(lanes.items(), key=lambda kv: (kv[0] == other, kv[0])))
    return ordered, folded


def timeline_svg(attempts: Iterable[AttemptInfo], now: float | None = None, title: str = "Attempts by host") -> str:
    """Every attempt (the last `MAX_BARS`) as a bar from its start to its end (to `now`, else to the
    latest time seen, while it runs), coloured by outcome, its job named in a tooltip."""
    everything = sorted(attempts, key=lambda a: a.start_time)
    shown = everything[-MAX_BARS:]
    times = [t for a in shown for t in (a.start_time, a.end_time) if t is not None]
    t0 = min(times, default=0.0)
    t1 = max([*times, *([now] if now is not None and shown else [])], default=0.0)
    lanes, folded = _lanes(shown)
    n_rows = sum(len(rows) for rows in lanes.values())
    height = TOP + n_rows * ROW + len(lanes) * GAP + 70
    x = LinearScale(0.0, t1 - t0, LEFT, RIGHT)
    subtitle = f"{len(shown):,} attempts on {len(lanes):,} hosts" if shown else "no attempts yet"
    if len(shown) < len(everything):
        subtitle = f"the last {len(shown):,} of {len(everything):,} attempts, on {len(lanes):,} hosts"
    if folded:
        subtitle += f"; {folded:,} hosts with the fewest attempts share the last lane"
    body, y = [], float(TOP)
    for host, rows in lanes.items():
        lane_h = len(rows) * ROW
        body.append(f'<rect x="{LEFT}" y="{num(y)}" width="{RIGHT - LEFT}" height="{lane_h}" fill="#f2f2f2"/>')
        label = host if len(host) <= 26 else host[:25] + "…"
        body.append(
            f'<text x="{LEFT - 6}" y="{num(y + lane_h / 2)}" dy="4" text-anchor="end">'
            f"{esc(label)}<title>{esc(host)}</title></text>"
        )
        for i, row in enumerate(rows):
            body.extend(_bar(a, x, t0, t1, y + i * ROW) for a in row)
        y += lane_h + GAP
    body.append(_time_axis(x, t1 - t0, y))
    names = ["ok", "failed", "oom", "timeout", "running"]
    entries = [(n, OUTCOME_COLOURS[n]) for n in names if n != "timeout"]
    entries[2] = ("oom / timeout", OUTCOME_COLOURS["oom"])
    body.append(legend(entries, LEFT, height - 12))
    return document(WIDTH, height, title, subtitle, body)


def _bar(a: AttemptInfo, x: LinearScale, t0: float, t1: float, y: float) -> str:
    end = a.end_time if a.end_time is not None else t1
    left, right = x(a.start_time - t0), x(end - t0)
    name = attempt_outcome(a)
    took = format_seconds(max(end - a.start_time, 0.0)) + (" so far" if a.end_time is None else "")
    tip = (
        f"{a.job_name or a.job_id} (job {a.job_id}, attempt {a.attempt_id}) on {a.host or UNKNOWN_HOST}: "
        f"{name}, from +{format_seconds(a.start_time - t0)}, {took}"
    )
    return (
        f'<rect x="{num(left)}" y="{num(y + 1)}" width="{num(max(right - left, 1.0))}" height="{ROW - 2}" '
        f'fill="{OUTCOME_COLOURS[name]}" stroke="#ffffff" stroke-width="0.5" class="{name}">'
        f"<title>{esc(tip)}</title></rect>"
    )


def _time_axis(x: LinearScale, span: float, y: float) -> str:
    out = [f'<g class="axes"><line x1="{LEFT}" y1="{num(y)}" x2="{RIGHT}" y2="{num(y)}" stroke="#000000"/>']
    for t, label in linear_second_ticks(span):
        px = num(x(t))
        out.append(f'<line x1="{px}" y1="{num(y)}" x2="{px}" y2="{num(y + 4)}" stroke="#000000"/>')
        out.append(f'<text x="{px}" y="{num(y + 17)}" text-anchor="middle">+{esc(label)}</text>')
    out.append(
        f'<text x="{(LEFT + RIGHT) / 2}" y="{num(y + 34)}" text-anchor="middle">time since the first start</text></g>'
    )
    return "".join(out)
