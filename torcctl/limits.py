"""`torcctl recover` and `watch --recover`: give failed jobs (and pending_failed ones, which their
failure handler had no rule for) the memory or time they ran out of, and run them again (the plan
is `core.recover`'s, made and applied by the daemon)."""

from __future__ import annotations

import os
import subprocess
import sys

from torcctl.api.client import Client
from torcctl.render import print_json
from torcd.core.limits import describe
from torcd.protocol import RecoverResult

HOOK_TIMEOUT = 3600.0  # seconds a recovery hook may run


def recover_once(client: Client, wf: int, args, dry_run: bool = False) -> RecoverResult:
    """One recovery of a workflow: the plan, the hook for jobs of unknown cause, then the change.
    Prints what it does (JSON: the result)."""
    options = {
        "workflow_id": wf,
        "memory_multiplier": args.memory_multiplier,
        "runtime_multiplier": args.runtime_multiplier,
        "retry_unknown": args.retry_unknown,
    }
    plan = client.call("workflows.recover", {**options, "dry_run": True}, RecoverResult)
    unknown = [a for a in plan.adjustments if a.diagnosis == "unknown"]
    if args.recovery_hook and unknown and not args.retry_unknown and not dry_run:
        options["retry_unknown"] = _run_hook(args.recovery_hook, wf, [a.job_id for a in unknown], args.json)
    result = plan if dry_run else client.call("workflows.recover", options, RecoverResult)
    if args.json:
        print_json(result)
        return result
    if not result.adjustments:
        print(f"workflow {wf}: no failed or pending_failed jobs to recover", flush=True)
    for a in result.adjustments:
        print(("dry run, nothing changed: " if dry_run else "") + describe(a), flush=True)
    if not dry_run and result.reset:
        print(f"{result.reset} jobs reset to run again", flush=True)
        if client.workflow(wf).executor == "slurm":
            client.submit_allocations(wf)
    return result


def _run_hook(command: str, wf: int, job_ids: list[int], quiet: bool) -> bool:
    """Run the user's hook for jobs whose failure has no resource cause; True if it succeeded
    (they are then retried). It sees their ids in TORC_JOB_IDS (comma-separated), and the workflow
    id in TORC_WORKFLOW_ID and as its last argument, as Torc's hook does (`bash fix.sh` gets it as $1)."""
    env = {**os.environ, "TORC_WORKFLOW_ID": str(wf), "TORC_JOB_IDS": ",".join(map(str, job_ids))}
    try:
        ran = subprocess.run(
            ["/bin/sh", "-c", command + ' "$@"', "sh", str(wf)],
            env=env,
            timeout=HOOK_TIMEOUT,
            stdout=sys.stderr if quiet else None,
        )
    except subprocess.TimeoutExpired:
        print(f"torcctl: recovery hook still running after {HOOK_TIMEOUT:g}s; stopped", file=sys.stderr)
        return False
    if ran.returncode != 0:
        print(
            f"torcctl: recovery hook exited {ran.returncode}: jobs {', '.join(map(str, job_ids))} stay failed",
            file=sys.stderr,
        )
    return ran.returncode == 0


def recover(client: Client, args) -> int:
    client.workflow(args.workflow_id)
    result = recover_once(client, args.workflow_id, args, dry_run=args.dry_run)
    return 0 if all(a.retry for a in result.adjustments) else 1


def add_options(p) -> None:
    p.add_argument(
        "--memory-multiplier",
        type=_multiplier,
        default=1.5,
        metavar="X",
        help="memory for jobs out of memory: the most they used (or had) times X (default 1.5)",
    )
    p.add_argument(
        "--runtime-multiplier",
        type=_multiplier,
        default=1.4,
        metavar="X",
        help="runtime for jobs out of time: their runtime times X (default 1.4)",
    )
    p.add_argument(
        "--retry-unknown",
        action="store_true",
        help="also retry failed and pending_failed jobs whose failure has no resource cause (as they were)",
    )
    p.add_argument(
        "--recovery-hook",
        metavar="COMMAND",
        help="run this shell command first for failures of unknown cause, the workflow id appended as its "
        "last argument (job ids in $TORC_JOB_IDS); "
        "if it succeeds, they are retried too",
    )


def _multiplier(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= 1000:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is out of range: a multiplier is 1 to 1000")
    return value


def count(text: str) -> int:
    import argparse

    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def update_resources(client: Client, args) -> int:
    """New limits for a job's next attempts, with the reason (kept in its job_resources_changed events)."""
    params = {"job_id": args.job_id, "reason": args.reason}
    for key in ("memory", "runtime", "num_cpus"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    answer = client.call("jobs.update_resources", params)
    if args.json:
        print_json(answer)
        return 0
    for resource, change in answer["changed"].items():
        print(f"job {args.job_id}: {resource} {_shown(resource, change['old'])} -> {_shown(resource, change['new'])}")
    return 0


def _shown(resource: str, value: float | None) -> str:
    from torcd.core.resources import format_bytes, format_duration

    if value is None:
        return "none"
    return (
        format_bytes(int(value))
        if resource == "memory"
        else format_duration(value)
        if resource == "runtime"
        else str(int(value))
    )
