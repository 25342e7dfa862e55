"""New jobs written into a workflow: their rows, their dependencies, and the failure handlers and
schedulers they name; for `workflows.create`, and for `workflows.add_jobs`, which adds them to a
workflow that exists, in the caller's transaction.

What a new job that waits for jobs already in the workflow starts as is `core.added_jobs`'s
decision; a dependency that already failed cancels it through the lifecycle's cascade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from torcd import events as E
from torcd.core import lifecycle as L
from torcd.core.added_jobs import Upstream, initial_status, upstream
from torcd.core.params import name_template
from torcd.core.retry import Rule
from torcd.errors import InvalidParams, InvalidTransition
from torcd.spec.fragment import on_slurm_adding
from torcd.spec.parse import SlurmSchedulerSpec, Workflow
from torcd.spec.schema import MAX_DEPENDENCIES, MAX_JOBS, ExpandedJob
from torcd.store.db import Tx, chunks, marks, require_workflow
from torcd.store.db import encode as _encode
from torcd.store.lifecycle import cancel_blocked, facts
from torcd.store.queries import labelled


def add_jobs(tx: Tx, wf: int, spec: Workflow, depends_on_ids: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Add the spec's jobs to workflow `wf` (all or nothing); return each new job's id by name."""
    row = require_workflow(tx, wf)
    if row["state"] == "canceled":
        raise InvalidTransition(
            f"workflow {wf} was canceled: jobs cannot be added to it (reset it first to run it again)"
        )
    schedulers, jobs = list(spec.schedulers), spec.jobs
    if row["executor"] == "slurm":
        stored = [
            msgspec.json.decode(r[0], type=SlurmSchedulerSpec)
            for r in tx.rows("SELECT spec FROM schedulers WHERE workflow_id = ?", (wf,))
        ]
        schedulers, jobs = on_slurm_adding(spec, stored, row["account"])
    outside = {name: list(dict.fromkeys(ids)) for name, ids in depends_on_ids.items()}
    _refuse_taken_names(tx, wf, jobs)
    _check_totals(tx, wf, jobs, outside)
    upstreams = _upstreams(tx, wf, jobs, outside)
    handler_ids = insert_handlers_and_schedulers(tx, wf, spec, schedulers)
    waiting = {
        j.name: len(j.depends_on) + sum(upstream(upstreams[d].status) != Upstream.MET for d in outside.get(j.name, ()))
        for j in jobs
    }
    ids = insert_jobs(tx, wf, spec, jobs, handler_ids, waiting, run_id=row["run_id"])
    insert_deps(tx, jobs, ids, outside)
    added = E.JobsAdded(workflow_id=wf, time=tx.now, job_count=len(jobs))
    tx.publish([added])
    new = set(ids.values())
    for jid in sorted({d for deps in outside.values() for d in deps}):
        if upstream(upstreams[jid].status) == Upstream.FAILED:
            cancel_blocked(tx, upstreams[jid], among=new)
    if new:
        sql = "SELECT status, count(*) FROM jobs WHERE id BETWEEN ? AND ? GROUP BY status ORDER BY status"
        counts = tx.rows(sql, (min(new), max(new)))
        added.message = ", ".join(f"{n} {k}" for k, n in labelled(counts).items())
    return ids


def _refuse_taken_names(tx: Tx, wf: int, jobs: list[ExpandedJob]) -> None:
    taken: list[str] = []
    for chunk in chunks([j.name for j in jobs]):
        sql = f"SELECT name FROM jobs WHERE workflow_id = ? AND name IN ({marks(len(chunk))})"
        taken += [r[0] for r in tx.rows(sql, (wf, *chunk))]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise InvalidParams(f"workflow {wf} already has a job named {taken[0]!r}{more}", {"field": "$.jobs"})


def _check_totals(tx: Tx, wf: int, jobs: list[ExpandedJob], outside: Mapping[str, list[int]]) -> None:
    """The workflow stays within the limits a spec is held to: jobs, and dependencies. Counting a
    workflow's rows holds the writer (0.1 s for 200,000 jobs' dependencies): each is counted only
    when what the whole database holds (read at once) could pass the limit."""
    ever = tx.one_row("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)")[0]
    if ever + len(jobs) > MAX_JOBS:
        have = tx.one_row("SELECT count(*) FROM jobs WHERE workflow_id = ?", (wf,))[0]
        if have + len(jobs) > MAX_JOBS:
            raise InvalidParams(
                f"workflow {wf} has {have:,} jobs; {len(jobs):,} more would pass the limit of {MAX_JOBS:,}",
                {"field": "$.jobs"},
            )
    edges = sum(len(j.depends_on) for j in jobs) + sum(len(ids) for ids in outside.values())
    if tx.one_row("SELECT count(*) FROM deps")[0] + edges > MAX_DEPENDENCIES:
        sql = "SELECT count(*) FROM deps WHERE job_id IN (SELECT id FROM jobs WHERE workflow_id = ?)"
        have = tx.one_row(sql, (wf,))[0]
        if have + edges > MAX_DEPENDENCIES:
            raise InvalidParams(
                f"workflow {wf} has {have:,} dependencies; {edges:,} more would pass the limit of {MAX_DEPENDENCIES:,}",
                {"field": "$.depends_on_ids"},
            )


def _upstreams(tx: Tx, wf: int, jobs: list[ExpandedJob], outside: Mapping[str, list[int]]) -> dict[int, L.Job]:
    """The jobs named in depends_on_ids, each a job of this workflow that a new job waits for
    (InvalidParams otherwise)."""
    names = {j.name for j in jobs}
    if unknown := [n for n in outside if n not in names]:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise InvalidParams(
            f"depends_on_ids names {unknown[0]!r}, which is not one of the jobs added{more}",
            {"field": "$.depends_on_ids"},
        )
    found = facts(tx, [d for ids in outside.values() for d in ids])
    for name, ids in outside.items():
        for d in ids:
            if d not in found or found[d].workflow_id != wf:
                raise InvalidParams(
                    f"depends_on_ids[{name!r}] names job {d}, which is not a job of workflow {wf}",
                    {"field": "$.depends_on_ids"},
                )
    return found


def insert_handlers_and_schedulers(
    tx: Tx, wf: int, spec: Workflow, schedulers: list[SlurmSchedulerSpec]
) -> dict[str, int]:
    """Insert the failure handlers and schedulers the workflow does not have yet; return each
    handler's id by name. One it has already under the same name is reused if it says the same,
    and refused (InvalidParams) if not: its jobs would run under other rules than they were given."""
    handler_ids: dict[str, int] = {}
    for name, rules in spec.failure_handlers.items():
        row = tx.one("SELECT id, rules FROM failure_handlers WHERE workflow_id = ? AND name = ?", (wf, name))
        if row is None:
            handler_ids[name] = tx.run(
                "INSERT INTO failure_handlers (workflow_id, name, rules) VALUES (?, ?, ?)", (wf, name, _encode(rules))
            )
        elif msgspec.json.decode(row[1], type=list[Rule]) == rules:
            handler_ids[name] = row[0]
        else:
            raise InvalidParams(
                f"failure handler {name!r} has other rules than the workflow's handler of that name: "
                "give the same rules, or another name",
                {"field": "$.failure_handlers"},
            )
    for sc in schedulers:
        row = tx.one("SELECT spec FROM schedulers WHERE workflow_id = ? AND name = ?", (wf, sc.name))
        if row is None:
            tx.run("INSERT INTO schedulers (workflow_id, name, spec) VALUES (?, ?, ?)", (wf, sc.name, _encode(sc)))
        elif msgspec.json.decode(row[0], type=SlurmSchedulerSpec) != sc:
            raise InvalidParams(
                f"slurm scheduler {sc.name!r} differs from the workflow's scheduler of that name: "
                "give it as the workflow has it, or another name",
                {"field": "$.slurm_schedulers"},
            )
    return handler_ids


def insert_jobs(
    tx: Tx,
    wf: int,
    spec: Workflow,
    jobs: list[ExpandedJob],
    handler_ids: dict[str, int],
    waiting: Mapping[str, int] | None = None,
    run_id: int = 1,
) -> dict[str, int]:
    """Insert the jobs, ready or blocked on the dependencies they wait for (`waiting`, by name:
    by default all they have); return each one's id by name."""
    # Ids given here, so that the claim order (one of the workflow's own ids, in the order
    # its jobs_sort_method says) keeps workflows first come, first served; jobs added later
    # come after every job the workflow had.
    base = tx.one_row("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0) + 1")[0]
    sorted_ = any(j.claim_order for j in jobs)
    pending = [len(j.depends_on) if waiting is None else waiting[j.name] for j in jobs]
    tx.many(
        """INSERT INTO jobs (id, claim_order, workflow_id, name, command, status, num_cpus, env, handler_id,
           pending_deps, updated, scheduler, num_gpus, memory_bytes, runtime_seconds, cancel_on_blocking,
           outputs, supports_termination, run_id, template, label, stdio, delete_stdio)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            (
                base + k,
                base + (j.claim_order if sorted_ else k),
                wf,
                j.name,
                j.command,
                int(initial_status(pending[k])),
                j.num_cpus,
                _encode(j.env) if j.env else None,
                handler_ids.get(j.failure_handler) if j.failure_handler else None,
                pending[k],
                tx.now,
                j.scheduler,
                j.num_gpus,
                j.memory_bytes,
                j.runtime_seconds,
                int(j.cancel_on_blocking),
                _encode([spec.files[f].path for f in j.outputs]) if j.outputs else None,
                int(j.supports_termination),
                run_id,
                j.template or name_template(j.name),
                j.label,
                j.stdio,
                int(j.delete_stdio),
            )
            for k, j in enumerate(jobs)
        ),
    )
    return {j.name: base + k for k, j in enumerate(jobs)}


def insert_deps(
    tx: Tx, jobs: list[ExpandedJob], ids: dict[str, int], outside: Mapping[str, Sequence[int]] | None = None
) -> None:
    """The dependencies among the new jobs (by name), and on jobs the workflow had (`outside`, by id)."""
    tx.many(
        "INSERT INTO deps (job_id, depends_on) VALUES (?, ?)",
        ((ids[j.name], ids[d]) for j in jobs for d in j.depends_on),
    )
    if outside:
        tx.many(
            "INSERT INTO deps (job_id, depends_on) VALUES (?, ?)",
            ((ids[name], d) for name, deps in outside.items() for d in deps),
        )
