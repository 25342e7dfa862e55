"""Peak memory and runtime against their limits, one point per job, as standalone SVG.

Both axes are logarithmic and share one scale, so the diagonal y = x is the limit: points above it
went over. Each job is its last finished attempt of the current run (`usage.last_finished`).
At scale the picture is sampled, not binned: at most `MAX_POINTS` points are drawn, every job
that was killed, went over or failed first (evenly thinned only if those alone exceed the cap),
then an even sample of the rest; the subtitle says how many of how many are shown."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from torcd.plots.svg import (
    BYTE_TICKS,
    OUTCOME_COLOURS,
    SECOND_TICKS,
    LogScale,
    document,
    esc,
    format_bytes,
    format_seconds,
    legend,
    num,
)
from torcd.plots.usage import NEAR, OVER, last_finished, utilization
from torcd.protocol import AttemptInfo

MAX_POINTS = 2_000
WIDTH, HEIGHT = 720, 540
LEFT, RIGHT, TOP, BOTTOM = 90, 690, 60, 450
What = Literal["memory", "runtime"]
_FIELDS = {"memory": ("peak_memory", "memory_limit"), "runtime": ("runtime_seconds", "runtime_limit")}
_FLOOR = {"memory": 1.0, "runtime": 0.001}  # what a zero shows as on a log axis


def outcome(row: dict[str, Any], what: What) -> str:
    """How a job's use of one resource ended: killed for it, over, failed otherwise, near, ok."""
    killed = "oom" if what == "memory" else "timeout"
    if row["cause"] == killed:
        return killed
    if f"{what}: {OVER}" in row["notes"]:
        return "over limit"
    if row["return_code"] not in (0, None):
        return "failed"
    if f"{what}: {NEAR}" in row["notes"]:
        return "near limit"
    return "ok"


def memory_svg(attempts: Iterable[AttemptInfo], title: str = "Peak memory against memory limit") -> str:
    """Each job's peak memory against its memory limit, as an SVG document."""
    return usage_svg(attempts, "memory", title)


def runtime_svg(attempts: Iterable[AttemptInfo], title: str = "Runtime against runtime limit") -> str:
    """Each job's runtime against its runtime limit, as an SVG document."""
    return usage_svg(attempts, "runtime", title)


def sample(points: list[tuple[str, Any]], most: int = MAX_POINTS) -> list[tuple[str, Any]]:
    """At most `most` of `points` (outcome, payload): the severe outcomes first, each class thinned
    evenly only when what is left of the budget cannot hold all of it."""
    severity = ["oom", "timeout", "over limit", "failed", "near limit", "ok"]
    chosen: list[tuple[str, Any]] = []
    for name in severity:
        group = [p for p in points if p[0] == name]
        budget = most - len(chosen)
        if len(group) > budget:
            group = [group[i * len(group) // budget] for i in range(budget)]
        chosen.extend(group)
    return chosen


def usage_svg(attempts: Iterable[AttemptInfo], what: What, title: str) -> str:
    used_key, limit_key = _FIELDS[what]
    fmt: Callable[[float], str] = format_bytes if what == "memory" else format_seconds
    rows = [utilization(a) for a in last_finished(attempts)]
    drawable = [(outcome(r, what), r) for r in rows if r[used_key] is not None and r[limit_key]]
    shown = sample(drawable)
    values = [v for _, r in shown for v in (r[used_key], r[limit_key]) if v > 0]
    lo = max(min(values, default=_FLOOR[what]) / 1.5, _FLOOR[what])
    hi = max(max(values, default=lo) * 1.5, lo * 10)
    x, y = LogScale(lo, hi, LEFT, RIGHT), LogScale(lo, hi, BOTTOM, TOP)
    subtitle = f"{len(shown):,} of {len(rows):,} jobs shown"
    if len(shown) < len(drawable):
        subtitle += f" (sampled: at most {MAX_POINTS:,}, those over a limit or failed first)"
    if len(drawable) < len(rows):
        subtitle += f"; {len(rows) - len(drawable):,} without a {what} limit or measurement"
    if not rows:
        subtitle = "no finished jobs yet"
    ticks = x.ticks(BYTE_TICKS if what == "memory" else SECOND_TICKS)
    body = [_axes(x, y, ticks, fmt, f"{what} limit", f"{what} used")]
    body.append(
        f'<line x1="{num(x(lo))}" y1="{num(y(lo))}" x2="{num(x(hi))}" y2="{num(y(hi))}" '
        'stroke="#666666" stroke-dasharray="6 4"><title>used = limit</title></line>'
    )
    for name, r in sorted(shown, key=lambda p: _DRAW_ORDER.index(p[0])):
        used, limit = r[used_key], r[limit_key]
        job = f"{r['job_name'] or r['job_id']} (job {r['job_id']}, attempt {r['attempt_id']})"
        tip = f"{job}: {fmt(used)} of {fmt(limit)}, {name}"
        body.append(
            f'<circle cx="{num(x(limit))}" cy="{num(y(used))}" r="3.5" fill="{OUTCOME_COLOURS[name]}" '
            f'fill-opacity="0.75" class="{name.replace(" ", "-")}"><title>{esc(tip)}</title></circle>'
        )
    killed = "oom" if what == "memory" else "timeout"
    names = ["ok", "near limit", "over limit", killed, "failed"]
    body.append(legend([(n, OUTCOME_COLOURS[n]) for n in names], LEFT, HEIGHT - 14))
    return document(WIDTH, HEIGHT, title, subtitle, body)


_DRAW_ORDER = ["ok", "near limit", "failed", "over limit", "oom", "timeout"]  # the severe on top


def _axes(x: LogScale, y: LogScale, ticks: list[float], fmt: Callable[[float], str], x_label: str, y_label: str) -> str:
    out = [
        f'<g class="axes" stroke="#000000"><line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}"/>'
        f'<line x1="{LEFT}" y1="{BOTTOM}" x2="{LEFT}" y2="{TOP}"/></g><g class="ticks" fill="#000000">'
    ]
    for t in ticks:
        px, py = num(x(t)), num(y(t))
        out.append(f'<line x1="{px}" y1="{TOP}" x2="{px}" y2="{BOTTOM}" stroke="#e5e5e5"/>')
        out.append(f'<line x1="{LEFT}" y1="{py}" x2="{RIGHT}" y2="{py}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{px}" y="{BOTTOM + 18}" text-anchor="middle">{esc(fmt(t))}</text>')
        out.append(f'<text x="{LEFT - 6}" y="{py}" dy="4" text-anchor="end">{esc(fmt(t))}</text>')
    mid_x, mid_y = (LEFT + RIGHT) / 2, (TOP + BOTTOM) / 2
    out.append(f'<text x="{mid_x}" y="{BOTTOM + 40}" text-anchor="middle">{esc(x_label)} (log scale)</text>')
    out.append(
        f'<text x="18" y="{mid_y}" text-anchor="middle" transform="rotate(-90 18 {mid_y})">'
        f"{esc(y_label)} (log scale)</text></g>"
    )
    return "".join(out)
