"""Following a workflow to its end: `run` (submit, follow, release a daemon it started),
`watch` (follow, recover, follow again) and `events`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

from torcctl.api.client import Client
from torcctl.commands import STATUS_ORDER, UsageError, create_workflow, is_workflow_id
from torcctl.errors import ConnectError, RpcError
from torcctl.limits import recover_once
from torcctl.render import event_line, print_json, table
from torcd.core.labels import label_problem
from torcd.protocol import IDLE_EVENTS, Event, WorkflowSummary


def _follow(client: Client, wf: int, args, after: int = 0) -> int:
    """Print the workflow's events until nothing more can run in it; return the last one's seq.

    The daemon ends the stream at the workflow's next idle point, not at an older one in the log
    (a workflow that was reset or had a job retried runs again)."""
    quiet = getattr(args, "quiet", False) and not args.json
    label = getattr(args, "label", None)  # `run --label`: the daemon runs these jobs while we follow
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

        counts = lambda: client.workflow(wf).counts  # noqa: E731
        LiveView(wf, counts, STATUS_ORDER).follow(
            seen(client.events(wf, after=after, until_idle=True, reconnect_for=0, serve_label=label))
        )
    else:
        for event in seen(
            client.events(
                wf,
                after=after,
                until_idle=True,
                kinds=IDLE_EVENTS if quiet else None,
                reconnect_for=0,
                serve_label=label,
            )
        ):
            if args.json:
                print_json(event)
            elif not quiet:
                print(event_line(event), flush=True)
    state = client.workflow(wf).state
    if state == "active":
        raise ConnectError(
            f"lost the daemon's event stream before workflow {wf} finished; follow it again with `torcctl watch {wf}`"
        )
    return last


def _summary(client: Client, wf: int, args) -> int:
    info = client.workflow(wf)
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
        jobs = client.jobs(wf, status="pending_failed")
        print(f"\n{pending} job(s) are pending_failed: their failure matched no rule and awaits classification.")
        table(["job", "name", "attempt", "rc"], [(j.id, j.name, j.attempt_id, j.return_code) for j in jobs])
        ids = " ".join(str(j.id) for j in jobs)
        print(
            f"\n  torcctl jobs retry {ids} --reason '...'   # run them again\n"
            f"  torcctl jobs fail {ids} --reason '...'    # give up; cancels what depends on them"
        )
    return 0 if counts.get("completed", 0) == total else 1


def run(client: Client, args) -> int:
    label = getattr(args, "label", None)
    if label is not None and (problem := label_problem(label)):
        raise UsageError(f"--label: {problem}")  # before anything is submitted
    if is_workflow_id(args.spec) and not os.path.exists(args.spec):  # Torc's `run WORKFLOW_ID`: one submitted already
        wf = client.workflow(int(args.spec))
        if not args.json and not args.quiet:
            print(f"workflow {wf.id}: {wf.name} ({sum(wf.counts.values())} jobs, {wf.state})", flush=True)
        _say_labelled(client, wf.id, args)
        _follow(client, wf.id, args)
        return _summary(client, wf.id, args)
    try:
        wf = create_workflow(client, args)
    except (RpcError, UsageError):
        _release_daemon(client, args)  # a bad spec leaves no daemon behind
        raise
    try:  # from here on (the id shown) Ctrl-C says what becomes of the workflow
        if not args.json and not args.quiet:
            print(f"workflow {wf.id}: {wf.name} ({sum(wf.counts.values())} jobs)", flush=True)
        _say_labelled(client, wf.id, args)
        with _ctrl_c_ends_the_stream(client) as pressed:
            try:
                _follow(client, wf.id, args)
            except ConnectError:
                if not pressed.is_set():
                    raise
            if pressed.is_set():
                raise KeyboardInterrupt
        code = _summary(client, wf.id, args)
    except KeyboardInterrupt:
        _interrupted(client, wf.id, args)
        raise
    except RpcError:
        _release_daemon(client, args, wf.id)
        raise
    _release_daemon(client, args, wf.id)
    return code


def _say_labelled(client: Client, wf: int, args) -> None:
    """Jobs with a label run only while a `run --label` of theirs follows: say so, or a run
    without one would wait for them without a word."""
    label = getattr(args, "label", None)
    others = client.call("jobs.count", {"workflow_id": wf, "labelled": True})["count"]
    if label is not None:
        mine = client.call("jobs.count", {"workflow_id": wf, "label": label})["count"]
        others -= mine
        if not mine:
            print(f"torcctl: no job of workflow {wf} has the label {label!r}", file=sys.stderr)
    if others:
        print(
            f"torcctl: {others} jobs of workflow {wf} have "
            + ("other labels" if label is not None else "a label")
            + f": they run only while `torcctl run {wf} --label LABEL` follows it",
            file=sys.stderr,
        )


@contextlib.contextmanager
def _ctrl_c_ends_the_stream(client: Client) -> Iterator[threading.Event]:
    """Ctrl-C stops the follow wherever it lands. Python raises KeyboardInterrupt between any two
    bytecodes, a finalizer's too, where it is printed and dropped: the run would follow on as if no
    key had been pressed. So the press is also recorded and the event stream cut; the caller, woken
    from its read, sees the record."""
    pressed = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        pressed.set()
        client.transport.cut_streams()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


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
    info = client.workflow(args.workflow_id)
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
        counts = client.workflow(args.workflow_id).counts
        # pending_failed too: a job with a handler that then ran out of memory parks there (Torc's
        # tutorial combines failure handlers with `watch --recover`)
        if (
            not (counts.get("failed") or counts.get("pending_failed"))
            or not recover_once(client, args.workflow_id, args).reset
        ):
            break
        recoveries += 1
    return _summary(client, args.workflow_id, args)


def events(client: Client, args) -> int:
    if args.follow:
        client.workflow(args.workflow_id)
        for e in client.events(args.workflow_id, after=args.after, reconnect_for=0):
            print_json(e) if args.json else print(event_line(e), flush=True)
        return 0
    evs = client.call("events.list", {"workflow_id": args.workflow_id, "after": args.after}, list[Event])
    for e in evs:
        print_json(e) if args.json else print(event_line(e))
    return 0
