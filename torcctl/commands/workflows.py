"""The workflow commands: submit (locally or to Slurm), list, show, cancel, delete, reset, allocations."""

from __future__ import annotations

import os
import sys

from torcctl.api.client import Client
from torcctl.commands import STATUS_ORDER, create_workflow, current_dir, is_workflow_id, spec_params
from torcctl.render import print_json, table, when
from torcd.protocol import AllocationInfo


def submit(client: Client, args) -> int:
    if is_workflow_id(args.spec) and not os.path.exists(args.spec):  # Torc's `submit WORKFLOW_ID`
        return _already_submitted(client, int(args.spec), args)
    wf = create_workflow(client, args)
    if args.json:
        print_json(wf)
    else:
        print(wf.id)
    return 0


def _already_submitted(client: Client, wf_id: int, args) -> int:
    """A workflow starts when it is created: submitting it again has nothing to do. Say where it is."""
    wf = client.workflow(wf_id)
    if args.json:
        print_json(wf)
        return 0
    print(wf.id)
    hint = {
        "active": f"it is running: follow it with `torcctl watch {wf.id}`",
        "awaiting_classification": "it waits for its pending_failed jobs to be classified: "
        f"`torcctl jobs list {wf.id} -s pending_failed`",
    }.get(wf.state, f"it is {wf.state}: run it again with `torcctl workflows reinitialize {wf.id}` or `reset-status`")
    print(f"workflow {wf.id} was submitted when it was created; {hint}", file=sys.stderr)
    return 0


def submit_slurm(client: Client, args) -> int:
    if args.dry_run:
        return _plan_slurm(client, args)
    wf = create_workflow(client, args, executor="slurm", account=args.account)
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

    plans = client.call("workflows.plan_slurm", {**spec_params(args), "cwd": current_dir(), "account": args.account})
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


def schedule_nodes(client: Client, args) -> int:
    """Torc's `slurm schedule-nodes`: submit allocations now (a chain of serialize_allocations at once)."""
    params: dict = {"workflow_id": args.workflow_id, "count": args.num_allocations}
    if args.scheduler is not None:
        params["scheduler"] = args.scheduler
    submitted = client.call("allocations.submit", params, list[AllocationInfo])
    return _allocation_table(submitted, args.json)


def allocations(client: Client, args) -> int:
    return _allocation_table(client.allocations(args.workflow_id), args.json)


def _allocation_table(allocs: list[AllocationInfo], as_json: bool) -> int:
    if as_json:
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


def workflows_list(client: Client, args) -> int:
    wfs = client.workflows()
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
    w = client.workflow(args.workflow_id)
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
    w = client.workflow(args.workflow_id)
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
    w = client.cancel(args.workflow_id)
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


def workflows_reinitialize(client: Client, args) -> int:
    r = client.call("workflows.reinitialize", {"workflow_id": args.workflow_id, "dry_run": args.dry_run})
    if args.json:
        print_json(r)
        return 0
    verb = "would run again" if args.dry_run else "run again"
    print(f"{r['count']} jobs {verb}" + (":" if r["count"] else " (nothing changed)"))
    for name, why in r["jobs"].items():
        print(f"  {name}: {why}")
    if r["truncated"]:
        print(f"  ... and {r['count'] - len(r['jobs'])} more")
    return 0
