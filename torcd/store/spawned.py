"""Jobs a running job adds to its own workflow (`jobs.spawn`, Torc's `spawn_jobs`), written in one
transaction with its lineage's iteration and state; and what a lineage has done so far.

The jobs go in through `new_jobs.add_jobs`, as any added jobs do, each also waiting for the job
that added them (still running, so they start blocked). A call is replayed, not repeated, when
every job it names is already there from the same lineage: an orchestrator retried after its
call committed adds nothing and counts no iteration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from torcd.core.retry import Rule
from torcd.core.spawning import GENERATION_ENV, cap_problem, record_name, spawning_of
from torcd.core.status import JobStatus
from torcd.errors import InvalidParams, InvalidTransition, NotFound, Unauthorized
from torcd.protocol import MAX_USER_DATA_ENTRIES, Spawned
from torcd.spec.parse import Workflow
from torcd.store.db import Tx, chunks, marks, require_workflow
from torcd.store.new_jobs import add_jobs


class Orchestrator(msgspec.Struct, frozen=True):
    """The job that calls, as the store has it."""

    id: int
    workflow_id: int
    status: int
    allocation_id: int | None  # of the worker running it, if one does
    lineage: str | None  # the lineage that added it (None: declared in the spec)
    scheduler: str | None  # its Slurm scheduler


def orchestrator(rows: Sequence[Any]) -> Orchestrator | None:
    """The calling job from ORCHESTRATOR_SQL's rows (None: no such job)."""
    if not rows:
        return None
    r = rows[0]
    return Orchestrator(r["id"], r["workflow_id"], r["status"], r["allocation_id"], r["lineage"], r["scheduler"])


ORCHESTRATOR_SQL = """SELECT j.id, j.workflow_id, j.status, w.allocation_id, j.lineage, j.scheduler FROM jobs j
                      LEFT JOIN workers w ON w.id = j.worker_id WHERE j.id = ?"""


def check_orchestrator(job: Orchestrator | None, job_id: int, allocation_id: int | None, lineage: str) -> Orchestrator:
    """The calling job, if it may add jobs to `lineage` now: it runs, (for an allocation's
    credential) in that allocation, and a job a lineage added extends that lineage only."""
    if job is None:
        raise NotFound(f"no job {job_id}")
    if allocation_id is not None and job.allocation_id != allocation_id:
        raise Unauthorized(f"allocation {allocation_id}'s credential may add jobs only from jobs running in it")
    if job.status != JobStatus.RUNNING:
        raise InvalidTransition(
            f"job {job_id} is {JobStatus(job.status).label}: only a running job adds jobs to its workflow"
        )
    if job.lineage is not None and job.lineage != lineage:
        raise InvalidParams(
            f"job {job_id} was added by lineage {job.lineage!r}: it adds jobs to that lineage only",
            {"field": "$.lineage"},
        )
    return job


def spawn_jobs(
    tx: Tx,
    job_id: int,
    allocation_id: int | None,
    lineage: str,
    spec: Workflow,
    outside: Mapping[str, Sequence[str]],
    state: bytes,
) -> Spawned:
    """Add `spec`'s jobs for running job `job_id` (all or nothing), each waiting for it and for
    the jobs of the workflow named in `outside`; count the lineage's iteration and keep `state`.
    No jobs: the lineage has converged, and `state` is its final record."""
    rows = tx.rows(ORCHESTRATOR_SQL, (job_id,))
    caller = check_orchestrator(orchestrator(rows), job_id, allocation_id, lineage)
    wf = caller.workflow_id
    row = require_workflow(tx, wf)
    names = [j.name for j in spec.jobs]
    if names and (replayed := _replay(tx, wf, job_id, lineage, spec)) is not None:
        return replayed
    if names and tx.one("SELECT 1 FROM user_data WHERE workflow_id = ? AND name = ?", (wf, record_name(lineage, None))):
        raise InvalidTransition(f"lineage {lineage!r} has converged (a call added nothing): it adds no more jobs")
    iterations = _iterations(tx, wf, lineage)
    if names and (why := cap_problem(lineage, iterations, spawning_of(row["spawning"]).max_iterations)):
        raise InvalidParams(why, {"field": "$.jobs"})
    ids: dict[str, int] = {}
    if names:
        for j in spec.jobs:  # where in its lineage each new job is (`Orchestrator.generation`)
            j.env = {**j.env, GENERATION_ENV: str(iterations + 1)}
        spec.failure_handlers = _handlers(tx, wf, [j.failure_handler for j in spec.jobs if j.failure_handler])
        ids = add_jobs(tx, wf, spec, _depends_on_ids(tx, wf, job_id, names, outside))
        for chunk in chunks(list(ids.values())):
            tx.run(f"UPDATE jobs SET lineage = ? WHERE id IN ({marks(len(chunk))})", (lineage, *chunk))
        iterations += 1
    tx.run(
        "INSERT INTO lineages (workflow_id, name, iterations) VALUES (?, ?, ?) "
        "ON CONFLICT (workflow_id, name) DO UPDATE SET iterations = excluded.iterations",
        (wf, lineage, iterations),
    )
    _keep_state(tx, wf, record_name(lineage, iterations if names else None), state)
    return Spawned(ids, iterations)


def _iterations(tx: Tx, wf: int, lineage: str) -> int:
    row = tx.one("SELECT iterations FROM lineages WHERE workflow_id = ? AND name = ?", (wf, lineage))
    return 0 if row is None else row[0]


def _replay(tx: Tx, wf: int, job_id: int, lineage: str, spec: Workflow) -> Spawned | None:
    """The call again, if every job it names is there already, added by this job to this lineage
    with the same command (an orchestrator retried after its call committed); None if none is.
    Some of them, or others of those names: the add goes on and refuses the names taken."""
    names = [j.name for j in spec.jobs]
    known = _jobs_named(tx, wf, names)
    if set(known) != set(names):
        return None
    ids = {n: known[n][0] for n in names}
    waits: set[int] = set()
    commands: dict[int, str] = {}
    for chunk in chunks(list(ids.values())):
        sql = f"SELECT job_id FROM deps WHERE depends_on = ? AND job_id IN ({marks(len(chunk))})"
        waits.update(r[0] for r in tx.rows(sql, (job_id, *chunk)))
        sql = f"SELECT id, command FROM jobs WHERE id IN ({marks(len(chunk))})"
        commands.update((r[0], r[1]) for r in tx.rows(sql, chunk))
    if all(
        known[j.name][1] == lineage and ids[j.name] in waits and commands.get(ids[j.name]) == j.command
        for j in spec.jobs
    ):
        return Spawned(ids, _iterations(tx, wf, lineage), replayed=True)
    return None


def _jobs_named(tx: Tx, wf: int, names: Sequence[str]) -> dict[str, tuple[int, str | None]]:
    out: dict[str, tuple[int, str | None]] = {}
    for chunk in chunks(list(dict.fromkeys(names))):
        sql = f"SELECT name, id, lineage FROM jobs WHERE workflow_id = ? AND name IN ({marks(len(chunk))})"
        out.update((r[0], (r[1], r[2])) for r in tx.rows(sql, (wf, *chunk)))
    return out


def _depends_on_ids(
    tx: Tx, wf: int, caller: int, names: Sequence[str], outside: Mapping[str, Sequence[str]]
) -> dict[str, list[int]]:
    """Each new job waits for the caller, and for the jobs of the workflow it names."""
    known = _jobs_named(tx, wf, [d for deps in outside.values() for d in deps])
    for name, deps in outside.items():
        for d in deps:
            if d not in known:
                raise InvalidParams(
                    f"job {name!r} depends on {d!r}, which is neither a job of workflow {wf} nor one added with it",
                    {"field": "$.jobs"},
                )
    return {n: [caller, *(known[d][0] for d in outside.get(n, ()))] for n in names}


def _handlers(tx: Tx, wf: int, names: Sequence[str]) -> dict[str, list[Rule]]:
    """The workflow's failure handlers the new jobs name, as stored (so they are reused)."""
    out: dict[str, list[Rule]] = {}
    for name in dict.fromkeys(names):
        row = tx.one("SELECT rules FROM failure_handlers WHERE workflow_id = ? AND name = ?", (wf, name))
        if row is None:
            raise InvalidParams(f"workflow {wf} has no failure handler named {name!r}", {"field": "$.jobs"})
        out[name] = msgspec.json.decode(row[0], type=list[Rule])
    return out


def _keep_state(tx: Tx, wf: int, name: str, state: bytes) -> None:
    if tx.db.execute(
        "UPDATE user_data SET data = ?, updated = ? WHERE workflow_id = ? AND name = ?",
        (state.decode(), tx.now, wf, name),
    ).rowcount:
        return
    if tx.one_row("SELECT count(*) FROM user_data WHERE workflow_id = ?", (wf,))[0] >= MAX_USER_DATA_ENTRIES:
        raise InvalidParams(
            f"workflow {wf} has {MAX_USER_DATA_ENTRIES:,} user data entries, the most it may have: "
            "a lineage's state cannot be kept",
            {"field": "$.state"},
        )
    tx.run(
        "INSERT INTO user_data (workflow_id, name, data, initial, updated) VALUES (?, ?, ?, 'null', ?)",
        (wf, name, state.decode(), tx.now),
    )
