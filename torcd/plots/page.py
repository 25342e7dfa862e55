"""The resource plots as files: three SVGs and a self-contained index.html that shows them inline
with a table of the jobs that went over or came within 10 % of a limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torcd.plots.charts import memory_svg, runtime_svg
from torcd.plots.svg import esc, format_bytes, format_seconds
from torcd.plots.timeline import timeline_svg
from torcd.plots.usage import last_finished, near_or_over, utilization
from torcd.protocol import AttemptInfo

MAX_TABLE_ROWS = 1_000
_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:960px}svg{max-width:100%;height:auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
)


def plot_files(attempts: Sequence[AttemptInfo], title: str, now: float | None = None) -> dict[str, str]:
    """File name -> text: memory.svg, runtime.svg, timeline.svg and index.html (which holds all three).
    `attempts` are the workflow's attempts of its current run, in order (`workflows.results`)."""
    svgs = {
        "memory.svg": memory_svg(attempts),
        "runtime.svg": runtime_svg(attempts),
        "timeline.svg": timeline_svg(attempts, now=now),
    }
    return {**svgs, "index.html": index_html(title, svgs, [utilization(a) for a in last_finished(attempts)])}


def index_html(title: str, svgs: dict[str, str], rows: Sequence[dict[str, Any]]) -> str:
    """One page, nothing loaded from elsewhere (its CSP forbids it): the SVGs inline, then the table."""
    flagged = near_or_over(rows)
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>"
    )
    figures = "".join(f"<figure>{svg}</figure>" for svg in svgs.values())
    return head + figures + _table(flagged) + "</body></html>"


def _table(flagged: Sequence[dict[str, Any]]) -> str:
    if not flagged:
        return "<h2>Jobs near or over a limit</h2><p>None: every job stayed under 90 % of its limits.</p>"
    out = [
        f"<h2>Jobs near or over a limit ({len(flagged):,})</h2>",
        "<table><thead><tr><th>job</th><th>name</th><th>attempt</th><th>rc</th><th>cause</th>"
        "<th>peak memory</th><th>runtime</th><th>notes</th></tr></thead><tbody>",
    ]
    for r in flagged[:MAX_TABLE_ROWS]:
        cells = (
            r["job_id"],
            r["job_name"] or "",
            r["attempt_id"],
            "" if r["return_code"] is None else r["return_code"],
            r["cause"] or "",
            _used(r["peak_memory"], r["memory_limit"], r.get("memory_percent"), format_bytes),
            _used(r["runtime_seconds"], r["runtime_limit"], r.get("runtime_percent"), format_seconds),
            "; ".join(r["notes"]),
        )
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    if len(flagged) > MAX_TABLE_ROWS:
        out.append(f"<p>The first {MAX_TABLE_ROWS:,} of {len(flagged):,} shown.</p>")
    return "".join(out)


def _used(value: float | None, limit: float | None, percent: float | None, fmt) -> str:
    if value is None:
        return ""
    text = fmt(value) + (f" / {fmt(limit)}" if limit else "")
    return text + (f" ({percent:g} %)" if percent is not None else "")
