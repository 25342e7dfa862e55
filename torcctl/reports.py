"""Reports on a finished (or stopped) workflow, shared by `torcctl reports` and the MCP tools:
what each job used against its limits, a summary of failures, and results filtered and sorted
as Torc's `results list` does. Client side only: no mcp import, so the CLI loads it cheaply."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from torcctl.api.client import Client
from torcctl.chromium import ChromiumError, find_chromium, render_png, svg_size
from torcctl.render import print_json, table
from torcd.plots.files import PlotDirectoryError, write_plot_files
from torcd.plots.page import plot_files
from torcd.plots.usage import last_finished, utilization
from torcd.protocol import AttemptInfo

# Torc's sort fields for results, and how each reads from one of our rows.
RESULT_SORT_KEYS = {
    "exec_time_minutes": lambda r: r["exec_time_minutes"],
    "peak_memory_bytes": lambda r: r["peak_memory_bytes"],
    "peak_cpu_percent": lambda r: r["avg_cpu_percent"],
    "return_code": lambda r: r["return_code"],
}


def resource_utilization(client: Client, workflow_id: int, include_failed: bool = True) -> list[dict[str, Any]]:
    """`utilization` of each job's last finished attempt in the current run."""
    return [utilization(a) for a in last_finished(client.results(workflow_id), include_failed)]


def workflow_summary(client: Client, workflow_id: int) -> dict[str, Any]:
    """The workflow's status and counts, its failures grouped by cause (oom, timeout,
    missing_output, else the exit code), and how long its attempts ran."""
    info = client.workflow(workflow_id)
    results = client.results(workflow_id)
    causes: dict[str, int] = {}
    for a in results:
        if a.return_code not in (None, 0):
            key = a.cause or f"exit {a.return_code}"
            causes[key] = causes.get(key, 0) + 1
    ran = [a.end_time - a.start_time for a in results if a.end_time is not None]
    return {
        "workflow": msgspec.to_builtins(info),
        "attempts": len(results),
        "failures_by_cause": causes,
        "total_runtime_seconds": round(sum(ran), 3),
        "longest_runtime_seconds": round(max(ran, default=0), 3),
    }


def list_results(
    client: Client,
    workflow_id: int,
    *,
    job_id: int | None = None,
    run_id: int | None = None,
    return_code: int | None = None,
    failed_only: bool = False,
    status: str | None = None,
    limit: int = 100,
    sort_by: str | None = None,
    reverse_sort: bool = False,
) -> list[dict[str, Any]]:
    """Attempts of the current run (of `run_id` when given), filtered and sorted as Torc's
    `results list`: runtime in minutes, peak memory in bytes, average CPU percent."""
    if sort_by is not None and sort_by not in RESULT_SORT_KEYS:
        raise ValueError(f"sort_by must be one of {', '.join(RESULT_SORT_KEYS)}, not {sort_by!r}")
    attempts = client.results(workflow_id, all_runs=run_id is not None, failed=failed_only, return_code=return_code)
    statuses = {}
    if status is not None:
        statuses = {j.id: j.status for j in client.jobs(workflow_id, limit=1_000_000)}
    rows = [
        _result_row(a, statuses.get(a.job_id))
        for a in attempts
        if (job_id is None or a.job_id == job_id)
        and (run_id is None or a.run_id == run_id)
        and (status is None or statuses.get(a.job_id) == status)
    ]
    if sort_by is not None:
        key = RESULT_SORT_KEYS[sort_by]
        # rows without the value (still running, never sampled) go last whichever the order
        rows.sort(key=lambda r: (key(r) is None, key(r) or 0), reverse=reverse_sort)
        if reverse_sort:
            rows.sort(key=lambda r: key(r) is None)
    elif reverse_sort:
        rows.reverse()
    return rows[:limit]


def _result_row(a: AttemptInfo, status: str | None) -> dict[str, Any]:
    runtime = None if a.end_time is None else a.end_time - a.start_time
    cpu = None if not runtime or a.cpu_seconds is None else round(100 * a.cpu_seconds / runtime, 1)
    row = {
        "job_id": a.job_id,
        "job_name": a.job_name,
        "run_id": a.run_id,
        "attempt_id": a.attempt_id,
        "return_code": a.return_code,
        "cause": a.cause,
        "exec_time_minutes": None if runtime is None else round(runtime / 60, 4),
        "peak_memory_bytes": a.peak_memory,
        "avg_cpu_percent": cpu,
        "completion_time": a.end_time,
        "stdout_path": a.stdout_path,
        "stderr_path": a.stderr_path,
    }
    if status is not None:
        row["status"] = status
    return row


# -- `torcctl reports ...` --


def check_resource_utilization_command(client: Client, args) -> int:
    """Torc's `reports check-resource-utilization`: a row per job, its flags in the last column."""
    rows = resource_utilization(client, args.workflow_id, include_failed=args.include_failed)
    if args.json:
        print_json(rows)
        return 0
    from torcd.core.resources import format_bytes

    def used(value, limit, percent, fmt) -> str | None:
        if value is None:
            return None
        text = fmt(value) + (f" / {fmt(limit)}" if limit else "")
        return text + (f" ({percent:g} %)" if percent is not None else "")

    table(
        ["job", "name", "attempt", "rc", "peak memory", "runtime", "flags"],
        [
            (
                r["job_id"],
                r["job_name"],
                r["attempt_id"],
                r["return_code"],
                used(r["peak_memory"], r["memory_limit"], r.get("memory_percent"), format_bytes),
                used(r["runtime_seconds"], r["runtime_limit"], r.get("runtime_percent"), lambda s: f"{s:.1f}s"),
                "; ".join(r["notes"]) or None,
            )
            for r in rows
        ],
    )
    return 0


def plot_resources_command(client: Client, args) -> int:
    """Memory, runtime and timeline plots of a workflow into a directory: SVGs, an index.html holding
    them, and with --png PNG copies. The daemon writes the same files for `generate_plots`."""
    from torcctl.commands import UsageError

    info = client.workflow(args.workflow_id)
    attempts = client.results(info.id)
    files: dict[str, str | bytes] = dict(plot_files(attempts, f"Workflow {info.id} {info.name}: resource use"))
    directory = os.path.realpath(args.output)  # a link the user names is theirs; nothing inside is followed
    written: list[str] = []
    try:
        written = write_plot_files(directory, files)
        if args.png:
            chromium = find_chromium()
            pngs = {
                name.replace(".svg", ".png"): render_png(chromium, os.path.join(directory, name), svg_size(str(svg)))
                for name, svg in files.items()
                if name.endswith(".svg")
            }
            written += write_plot_files(directory, pngs)
    except (PlotDirectoryError, ChromiumError) as e:
        raise UsageError(str(e) + (f" (the HTML and SVG files are in {directory})" if written else "")) from None
    if args.json:
        print_json({"directory": directory, "files": written})
    else:
        print(os.path.join(directory, "index.html"))
    return 0


def summary_command(client: Client, args) -> int:
    """Torc's `reports summary`: status, counts, failures by cause, time spent."""
    s = workflow_summary(client, args.workflow_id)
    if args.json:
        print_json(s)
        return 0
    wf = s["workflow"]
    print(f"workflow {wf['id']} {wf['name']}: {wf['state']}")
    print("jobs: " + (", ".join(f"{n} {status}" for status, n in sorted(wf["counts"].items())) or "none"))
    print(
        f"attempts: {s['attempts']}, {s['total_runtime_seconds']:.1f}s in all, "
        f"the longest {s['longest_runtime_seconds']:.1f}s"
    )
    print("failures: " + (", ".join(f"{n} {cause}" for cause, n in sorted(s["failures_by_cause"].items())) or "none"))
    return 0
