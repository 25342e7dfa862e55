"""The job commands: list, show, attempts and results, retry and fail, logs."""

from __future__ import annotations

import shutil
import sys

from torcctl.api.client import Client, Stream
from torcctl.commands import UsageError
from torcctl.render import print_json, seek_last_lines, table, when
from torcd.protocol import AttemptInfo, JobInfo
from torcd.services.job_logs import open_log_for_reading


def jobs_list(client: Client, args) -> int:
    params = {"workflow_id": args.workflow_id, "limit": args.limit, "offset": args.offset}
    if args.status:
        params["status"] = args.status
    jobs = client.call("jobs.list", params, list[JobInfo])
    key = {
        "id": lambda j: j.id,
        "name": lambda j: j.name,
        "status": lambda j: (j.status, j.id),
        "attempt": lambda j: (j.attempt_id, j.id),
        "rc": lambda j: (j.return_code is None, j.return_code or 0, j.id),
    }
    jobs.sort(key=key[args.sort_by])
    if args.json:
        print_json(jobs)
        return 0
    show_tail = any(j.stderr_tail for j in jobs) and args.status in ("pending_failed", "failed")
    headers = ["id", "name", "status", "attempt", "run", "rc", "reason"] + (
        ["stderr (last lines)"] if show_tail else []
    )
    table(
        headers,
        [
            (j.id, j.name, j.status, j.attempt_id, j.run_id, j.return_code, j.reason)
            + ((j.stderr_tail,) if show_tail else ())
            for j in jobs
        ],
    )
    return 0


def jobs_show(client: Client, args) -> int:
    j = client.job(args.job_id)
    if args.json:
        print_json(j)
        return 0
    table(
        ["field", "value"],
        [
            ("id", j.id),
            ("workflow", j.workflow_id),
            ("name", j.name),
            ("command", j.command),
            ("status", j.status),
            ("attempt", j.attempt_id),
            ("run", j.run_id),
            ("cpus", j.num_cpus),
            ("gpus", j.num_gpus),
            ("memory", _bytes(j.memory_bytes)),
            ("runtime", _seconds(j.runtime_seconds)),
            ("failure handler", j.failure_handler),
            ("depends on", " ".join(map(str, j.depends_on))),
            ("last rc", j.return_code),
            ("reason", j.reason),
            ("stderr (last lines)", j.stderr_tail),
        ],
    )
    return 0


def _bytes(n: int | None) -> str:
    if n is None:
        return "no limit"
    size: float = n
    for unit in ("", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:g}{unit}"
        size /= 1024
    return str(size)


def _seconds(s: float | None) -> str:
    from torcd.core.resources import format_duration

    return "no limit" if s is None else format_duration(s)


def jobs_attempts(client: Client, args) -> int:
    atts = client.attempts(args.job_id)
    return _attempts_table(atts, args)


def results(client: Client, args) -> int:
    """Torc's `results list`: every job's attempts across the workflow."""
    attempts = client.results(
        args.workflow_id, all_runs=args.all_runs, failed=args.failed, return_code=args.return_code
    )
    return _attempts_table(attempts, args, with_job=True)


def _attempts_table(atts: list[AttemptInfo], args, with_job: bool = False) -> int:
    if args.json:
        print_json(atts)
        return 0
    from torcd.core.resources import format_bytes

    table(
        (["job", "name"] if with_job else [])
        + [
            "run",
            "attempt",
            "rc",
            "cause",
            "wall",
            "cpu",
            "peak memory",
            "limits",
            "rule",
            "action",
            "recovery",
            "start",
            "stdout",
            "stderr",
        ],
        [
            ((a.job_id, a.job_name) if with_job else ())
            + (
                a.run_id,
                a.attempt_id,
                a.return_code,
                a.cause,
                None if a.end_time is None else f"{a.end_time - a.start_time:.1f}s",
                None if a.cpu_seconds is None else f"{a.cpu_seconds:.1f}s",
                None if a.peak_memory is None else format_bytes(a.peak_memory),
                " ".join(
                    x
                    for x in (
                        a.memory_limit and format_bytes(a.memory_limit),
                        a.runtime_limit and _seconds(a.runtime_limit),
                    )
                    if x
                )
                or None,
                a.rule_index,
                a.action,
                a.recovery_outcome,
                when(a.start_time),
                a.stdout_path,
                a.stderr_path,
            )
            for a in atts
        ],
    )
    return 0


def _classify(client: Client, args, method: str, verb: str) -> int:
    r = client.call(method, {"job_ids": args.job_ids, "reason": args.reason, "source": "cli"})
    print_json(r) if args.json else print(f"{verb}: " + " ".join(map(str, r["changed"])))
    return 0


def jobs_retry(client: Client, args) -> int:
    return _classify(client, args, "jobs.retry", "retrying")


def jobs_fail(client: Client, args) -> int:
    return _classify(client, args, "jobs.fail", "failed")


def logs(client: Client, args) -> int:
    stream: Stream = "stderr" if args.stderr else "stdout"
    try:
        path = client.log_path(args.job_id, args.attempt, stream, run_id=args.run, recovery=args.recovery)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        with open_log_for_reading(path) as f:
            if args.tail is not None:
                seek_last_lines(f, args.tail)
            out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
            if out is None:  # stdout replaced by a text stream
                sys.stdout.write(f.read().decode(errors="replace"))
            else:
                shutil.copyfileobj(f, out)  # in chunks: a log may be larger than memory
                out.flush()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    return 0
