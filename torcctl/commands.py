"""One function per torcctl command: call the daemon, render the answer."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys

from torcctl.client import Client, ConnectError, RpcError
from torcctl.limits import recover_once
from torcctl.render import event_line, print_json, seek_last_lines, table, when
from torcd.protocol import IDLE_EVENTS, AllocationInfo, AttemptInfo, Event, JobInfo, WorkflowSummary
from torcd.services.job_logs import open_log_for_reading

STATUS_ORDER = [
    "uninitialized",
    "blocked",
    "ready",
    "pending",
    "running",
    "recovering",
    "completed",
    "failed",
    "canceled",
    "terminated",
    "disabled",
    "pending_failed",
]


class UsageError(Exception):
    pass


MAX_SPEC_BYTES = 64 * 1024 * 1024  # what the daemon accepts in workflows.create


def read_spec(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_SPEC_BYTES + 1)  # a spec pointed at /dev/zero must not fill memory
    except OSError as e:
        raise UsageError(f"cannot read spec {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"spec {path} is not UTF-8 text: {e}") from None
    if len(text) > MAX_SPEC_BYTES:
        raise UsageError(f"spec {path} is larger than {MAX_SPEC_BYTES // 2**20} MiB")
    return text


def current_dir() -> str:
    try:
        return os.getcwd()
    except FileNotFoundError:
        raise UsageError("the current directory no longer exists (it was deleted); cd to one that does") from None


def _spec_params(args) -> dict:
    """What the daemon needs to read a spec: its text, its name (for errors) and its format."""
    return {
        "spec_text": read_spec(args.spec),
        "spec_path": args.spec,
        **({"spec_format": args.spec_format} if getattr(args, "spec_format", None) else {}),
    }


def _create(client: Client, args, **extra) -> WorkflowSummary:
    cwd = current_dir()
    return client.call("workflows.create", {**_spec_params(args), "cwd": cwd, **extra}, WorkflowSummary)


def ping(client: Client, args) -> int:
    info = client.call("ping")
    if args.json:
        print_json(info)
    else:
        print(f"torcd {info['version']} (pid {info['pid']}) on {info['socket']}, up {info['uptime']:.1f}s")
    return 0


def submit(client: Client, args) -> int:
    wf = _create(client, args)
    if args.json:
        print_json(wf)
    else:
        print(wf.id)
    return 0


def _follow(client: Client, wf: int, args, after: int = 0) -> int:
    """Print the workflow's events until nothing more can run in it; return the last one's seq.

    The daemon ends the stream at the workflow's next idle point, not at an older one in the log
    (a workflow that was reset or had a job retried runs again)."""
    quiet = getattr(args, "quiet", False) and not args.json
    last = after

    log = getattr(args, "log_file", None)

    def seen(events):
        nonlocal last
        for event in events:
            last = max(last, event.seq)
            if log is not None:
                log.write(event_line(event) + "\n")
                log.flush()
            yield event

    if not quiet and not args.json and sys.stdout.isatty():
        from torcctl.live import LiveView

        counts = lambda: client.call("workflows.show", {"workflow_id": wf}, WorkflowSummary).counts  # noqa: E731
        LiveView(wf, counts, STATUS_ORDER).follow(seen(client.events(wf, after=after, until_done=True)))
    else:
        for event in seen(client.events(wf, after=after, until_done=True, kinds=IDLE_EVENTS if quiet else None)):
            if args.json:
                print_json(event)
            elif not quiet:
                print(event_line(event), flush=True)
    state = client.call("workflows.show", {"workflow_id": wf}, WorkflowSummary).state
    if state == "active":
        raise ConnectError(
            f"lost the daemon's event stream before workflow {wf} finished; follow it again with `torcctl watch {wf}`"
        )
    return last


def _summary(client: Client, wf: int, args) -> int:
    info = client.call("workflows.show", {"workflow_id": wf}, WorkflowSummary)
    counts = info.counts
    total = sum(counts.values())
    if not args.json:
        table(
            ["status", "jobs"],
            [(s, counts[s]) for s in STATUS_ORDER if counts.get(s)],
            title=f"workflow {wf} ({info.name}): {total} jobs",
        )
    pending = counts.get("pending_failed", 0)
    if pending and not args.json:
        jobs = client.call("jobs.list", {"workflow_id": wf, "status": "pending_failed"}, list[JobInfo])
        print(f"\n{pending} job(s) are pending_failed: their failure matched no rule and awaits classification.")
        table(["job", "name", "attempt", "rc"], [(j.id, j.name, j.attempt_id, j.return_code) for j in jobs])
        ids = " ".join(str(j.id) for j in jobs)
        print(
            f"\n  torcctl jobs retry {ids} --reason '...'   # run them again\n"
            f"  torcctl jobs fail {ids} --reason '...'    # give up; cancels what depends on them"
        )
    return 0 if counts.get("completed", 0) == total else 1


def run(client: Client, args) -> int:
    if args.spec.isdigit() and not os.path.exists(args.spec):  # Torc's `run WORKFLOW_ID`: one submitted already
        wf = client.call("workflows.show", {"workflow_id": int(args.spec)}, WorkflowSummary)
        if not args.json and not args.quiet:
            print(f"workflow {wf.id}: {wf.name} ({sum(wf.counts.values())} jobs, {wf.state})", flush=True)
        _follow(client, wf.id, args)
        return _summary(client, wf.id, args)
    try:
        wf = _create(client, args)
    except (RpcError, UsageError):
        _release_daemon(client, args)  # a bad spec leaves no daemon behind
        raise
    try:  # from here on (the id shown) Ctrl-C says what becomes of the workflow
        if not args.json and not args.quiet:
            print(f"workflow {wf.id}: {wf.name} ({sum(wf.counts.values())} jobs)", flush=True)
        _follow(client, wf.id, args)
        code = _summary(client, wf.id, args)
    except KeyboardInterrupt:
        _interrupted(client, wf.id, args)
        raise
    except RpcError:
        _release_daemon(client, args, wf.id)
        raise
    _release_daemon(client, args, wf.id)
    return code


def _daemon_autostarted(client: Client, args) -> bool:
    """Was the daemon started by a client (this one or another) rather than by the user?"""
    if args.autostarted is not None:
        return True
    try:
        return bool(client.call("ping").get("autostarted"))
    except (ConnectError, RpcError):
        return False


def _release_daemon(client: Client, args, wf: int | None = None) -> None:
    """A daemon a client started stops when its last workflow ends, unless someone else uses it."""
    if not _daemon_autostarted(client, args):
        return
    try:
        answer = client.call("shutdown", {"if_idle": True} | ({"ignore_workflow": wf} if wf else {}))
    except (ConnectError, RpcError):
        return
    if answer["stopping"]:
        if args.autostarted is not None:
            args.autostarted.wait(30)
    elif args.autostarted is not None:
        print(f"torcctl: leaving the torcd this command started running: {answer['reason']}", file=sys.stderr)


def _interrupted(client: Client, wf: int, args) -> None:
    """Ctrl-C: stop a daemon this run started (and so the workflow's jobs) if nobody else needs
    it; otherwise the workflow goes on without us. Say which before it happens."""
    answer = {"stopping": False, "reason": "it was not started by torcctl"}
    try:
        if _daemon_autostarted(client, args):
            answer = client.call("shutdown", {"if_idle": True, "ignore_workflow": wf})
    except (ConnectError, RpcError):
        return
    if answer["stopping"]:
        print(
            f"\ntorcctl: interrupted: stopping the torcd this command started; the running jobs of workflow "
            f"{wf} are terminated (run them again with `torcctl workflows reset-status {wf} --failed-only` "
            f"and `torcctl watch {wf}`)",
            file=sys.stderr,
        )
        if args.autostarted is not None:
            args.autostarted.wait(30)
    else:
        print(
            f"\ntorcctl: interrupted: workflow {wf} keeps running in torcd ({answer['reason']}); follow it "
            f"with `torcctl watch {wf}` or stop it with `torcctl workflows cancel {wf}`",
            file=sys.stderr,
        )


def watch(client: Client, args) -> int:
    info = client.call("workflows.show", {"workflow_id": args.workflow_id}, WorkflowSummary)
    with _watch_log(info, args) as args.log_file:
        return _watch(client, args)


@contextlib.contextmanager
def _watch_log(info: WorkflowSummary, args):
    """As Torc's watch does: every event line also goes to OUTPUT_DIR/watch_HOST_wfID.log (the
    workflow's output directory unless -o names another), appended, never through a symlink."""
    directory = args.output_dir or os.path.join(info.cwd, info.output_dir)
    path = os.path.join(directory, f"watch_{socket.gethostname()}_wf{info.id}.log")
    try:
        if args.output_dir or os.path.isdir(info.cwd):  # never make a workflow's deleted directory again
            os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:  # a copy of what watch prints: it goes on without one
        print(f"torcctl: warning: no watch log: cannot write {path}: {e.strerror}", file=sys.stderr)
        yield None
        return
    with os.fdopen(fd, "a") as f:
        yield f


def _watch(client: Client, args) -> int:
    if args.auto_schedule is not None:
        policy = client.call(
            "workflows.set_auto_schedule",
            {
                "workflow_id": args.workflow_id,
                "enabled": args.auto_schedule,
                "threshold": args.auto_schedule_threshold,
                "cooldown": args.auto_schedule_cooldown,
                "stranded_timeout": args.auto_schedule_stranded_timeout,
            },
        )
        if not args.json and not args.quiet:
            print(
                "auto-schedule "
                + (
                    f"on: threshold {policy['threshold']}, cooldown {policy['cooldown']:g}s, "
                    f"stranded timeout {policy['stranded_timeout']:g}s"
                    if policy["enabled"]
                    else "off"
                ),
                flush=True,
            )
    recoveries = seq = 0
    while True:
        seq = _follow(client, args.workflow_id, args, after=seq)
        if not args.recover or recoveries >= args.max_retries:
            break
        counts = client.call("workflows.show", {"workflow_id": args.workflow_id}, WorkflowSummary).counts
        # pending_failed too: a job with a handler that then ran out of memory parks there (Torc's
        # tutorial combines failure handlers with `watch --recover`)
        if (
            not (counts.get("failed") or counts.get("pending_failed"))
            or not recover_once(client, args.workflow_id, args).reset
        ):
            break
        recoveries += 1
    return _summary(client, args.workflow_id, args)


def submit_slurm(client: Client, args) -> int:
    if args.dry_run:
        return _plan_slurm(client, args)
    wf = _create(client, args, executor="slurm", account=args.account)
    params = {"workflow_id": wf.id}
    if args.allocations:
        params["count"] = args.allocations
    allocs = client.call("allocations.submit", params, list[AllocationInfo])
    if args.json:
        print_json({"workflow": wf, "allocations": allocs})
        return 0
    print(wf.id)
    if not allocs and not args.allocations:
        print(
            "no allocations now: the spec's schedule_nodes actions submit them as their jobs become ready",
            file=sys.stderr,
        )
    for a in allocs:
        state = f"slurm job {a.slurm_job_id}" if a.slurm_job_id else f"failed: {a.reason}"
        print(f"allocation {a.id}: {a.cpus} cpus, {state}", file=sys.stderr)
    return 0 if all(a.slurm_job_id for a in allocs) else 1


def _plan_slurm(client: Client, args) -> int:
    from torcd.core.resources import format_bytes

    plans = client.call("workflows.plan_slurm", {**_spec_params(args), "cwd": current_dir(), "account": args.account})
    if args.json:
        print_json(plans)
        return 0
    for p in plans:
        node = p["node"]
        shape = (
            f"{node['cpus']} CPUs"
            + (f", {format_bytes(node['memory'])}" if node.get("memory") else "")
            + (f", {node['gpus']} GPUs" if node.get("gpus") else "")
        )
        print(
            f"scheduler {p['scheduler']}: {p['allocations']} allocations of {p['nodes_per_allocation']} node(s) "
            f"({shape} each) for {sum(map(len, p['nodes']))} ready jobs on {len(p['nodes'])} node(s)"
        )
        for i, names in enumerate(p["nodes"], 1):
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} jobs)" if len(names) > 8 else "")
            print(f"  node {i}: {shown}")
        for name, why in p.get("refused", {}).items():
            print(f"  {name}: fits no node: {why}")
    print("(dry run: nothing was submitted)")
    return 0


def allocations(client: Client, args) -> int:
    allocs = client.call("allocations.list", {"workflow_id": args.workflow_id}, list[AllocationInfo])
    if args.json:
        print_json(allocs)
        return 0
    table(
        ["id", "slurm job", "scheduler", "state", "slurm state", "cpus", "submitted", "started", "ended", "reason"],
        [
            (
                a.id,
                a.slurm_job_id,
                a.scheduler,
                a.state,
                a.slurm_state,
                a.cpus,
                when(a.submitted),
                when(a.started),
                when(a.ended),
                a.reason,
            )
            for a in allocs
        ],
    )
    return 0


def mcp(client: Client, args) -> int:
    try:
        from torcctl.mcp.server import serve
    except ImportError as e:
        raise UsageError(
            f"torcctl mcp needs the mcp package ({e.name} is missing): pip install 'torc-py[mcp]'"
        ) from None
    return serve(client)


def worker(client: Client, args) -> int:
    import asyncio

    from torcctl.worker.run import WorkerError, run_worker
    from torcd import log_config as torc_logging

    if not args.url:
        raise UsageError("worker needs --url (or TORC_API_URL)")
    torc_logging.configure("info")
    try:
        return asyncio.run(run_worker(args))
    except WorkerError as e:
        raise UsageError(str(e)) from None


def workflows_list(client: Client, args) -> int:
    wfs = client.call("workflows.list", {}, list[WorkflowSummary])
    if args.json:
        print_json(wfs)
        return 0
    table(
        ["id", "name", "state", "run", "jobs", "completed", "failed", "pending_failed", "created"],
        [
            (
                w.id,
                w.name,
                w.state,
                w.run_id,
                sum(w.counts.values()),
                w.counts.get("completed", 0),
                w.counts.get("failed", 0),
                w.counts.get("pending_failed", 0),
                when(w.created),
            )
            for w in wfs
        ],
    )
    return 0


def workflows_show(client: Client, args) -> int:
    w = client.call("workflows.show", {"workflow_id": args.workflow_id}, WorkflowSummary)
    if args.json:
        print_json(w)
        return 0
    import json

    table(
        ["field", "value"],
        [
            ("id", w.id),
            ("name", w.name),
            ("description", w.description),
            ("user", w.user),
            ("project", w.project),
            ("metadata", json.dumps(w.metadata) if w.metadata else None),
            ("state", w.state),
            ("run", w.run_id),
            ("executor", w.executor),
            ("directory", w.cwd),
            ("output", w.output_dir),
            ("created", when(w.created)),
        ]
        + [(f"jobs {s}", w.counts[s]) for s in STATUS_ORDER if w.counts.get(s)],
    )
    return 0


def workflows_status(client: Client, args) -> int:
    w = client.call("workflows.show", {"workflow_id": args.workflow_id}, WorkflowSummary)
    if args.json:
        print_json({"workflow_id": w.id, "state": w.state, "counts": w.counts})
        return 0
    table(
        ["status", "jobs"],
        [(s, w.counts[s]) for s in STATUS_ORDER if w.counts.get(s)],
        title=f"workflow {w.id} ({w.name}): {w.state}",
    )
    return 0


def workflows_cancel(client: Client, args) -> int:
    w = client.call("workflows.cancel", {"workflow_id": args.workflow_id}, WorkflowSummary)
    print_json(w) if args.json else print(f"workflow {w.id} canceled")
    return 0


def workflows_delete(client: Client, args) -> int:
    r = client.call("workflows.delete", {"workflow_id": args.workflow_id})
    print_json(r) if args.json else print(f"workflow {args.workflow_id} deleted")
    return 0


def workflows_reset(client: Client, args) -> int:
    r = client.call("workflows.reset_status", {"workflow_id": args.workflow_id, "failed_only": args.failed_only})
    print_json(r) if args.json else print(f"{r['reset']} jobs reset")
    return 0


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
    j = client.call("jobs.show", {"job_id": args.job_id}, JobInfo)
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
    atts = client.call("jobs.attempts", {"job_id": args.job_id}, list[AttemptInfo])
    return _attempts_table(atts, args)


def results(client: Client, args) -> int:
    """Torc's `results list`: every job's attempts across the workflow."""
    params = {"workflow_id": args.workflow_id, "all_runs": args.all_runs, "failed": args.failed}
    if args.return_code is not None:
        params["return_code"] = args.return_code
    return _attempts_table(client.call("workflows.results", params, list[AttemptInfo]), args, with_job=True)


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
    atts = client.call("jobs.attempts", {"job_id": args.job_id}, list[AttemptInfo])
    if args.run is not None:
        atts = [a for a in atts if a.run_id == args.run]
    if args.attempt is not None:
        atts = [a for a in atts if a.attempt_id == args.attempt]
    if not atts:
        raise UsageError(f"job {args.job_id} has no such attempt")
    a = atts[-1]
    path = a.stderr_path if args.stderr else a.stdout_path
    if args.recovery:  # the recovery script's logs sit beside the job's, named alike
        folder, name = os.path.split(path)
        path = os.path.join(folder, "recovery_" + name.removeprefix("job_"))
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


def events(client: Client, args) -> int:
    if args.follow:
        client.call("workflows.show", {"workflow_id": args.workflow_id})
        for e in client.events(args.workflow_id, after=args.after):
            print_json(e) if args.json else print(event_line(e), flush=True)
        return 0
    evs = client.call("events.list", {"workflow_id": args.workflow_id, "after": args.after}, list[Event])
    for e in evs:
        print_json(e) if args.json else print(event_line(e))
    return 0
