"""The store's side of the job lifecycle: read the facts a stimulus needs, hand them to
`core.lifecycle`, and write back what it decided, in the caller's transaction.

This is the only code that writes `jobs.status`. The follow-ups that reach other jobs
(releasing dependents, canceling what a failed job blocks) are read here with set-based SQL
and go through the lifecycle job by job, like every other change.
"""

from __future__ import annotations

import collections
import signal
import sqlite3
from collections.abc import Collection, Iterable, Sequence

import msgspec

from torcd import events as E
from torcd.core import lifecycle as L
from torcd.core.attempts import Runnable, SrunOptions, stdio_paths
from torcd.core.resources import Capacity, Monitoring, Requirements, shortfalls
from torcd.core.status import ACTIVE
from torcd.core.status import JobStatus as S
from torcd.store.db import Tx, chunks, marks
from torcd.store.effective_limits import effective_memory, effective_runtime

# What it takes to start a job: select these, then `runnables_fitting` or `runnable`.
RUNNABLE_COLUMNS = f"""j.id, j.workflow_id, j.name, j.command, j.run_id, j.attempt_id, j.num_cpus, j.env,
                      {effective_runtime()} AS runtime_seconds, j.num_gpus,
                      {effective_memory()} AS memory_bytes,
                      w.cwd, w.output_dir, j.status, j.worker_id, j.runtime_scale, j.memory_scale,
                      w.monitor_all, w.sample_interval, j.outputs, j.supports_termination, j.label,
                      w.term_signal, w.term_grace, j.stdio, j.delete_stdio, w.limit_resources, w.srun
                      FROM jobs j JOIN workflows w ON w.id = j.workflow_id"""
FACT_COLUMNS = "id, workflow_id, name, status, run_id, attempt_id, worker_id, runtime_scale, memory_scale"
_SET_STATUS = """UPDATE jobs SET status = ?, attempt_id = ?, run_id = ?, worker_id = coalesce(?, worker_id),
                 reason = CASE WHEN ? THEN reason ELSE ? END, runtime_scale = coalesce(?, runtime_scale),
                 memory_scale = coalesce(?, memory_scale), updated = ? WHERE id = ?"""


def env_of(text: str | None) -> dict[str, str]:
    return msgspec.json.decode(text, type=dict[str, str]) if text else {}


def runnable(r: sqlite3.Row, start_time: float | None = None, gpus: str | None = None) -> Runnable:
    """A job to start, or (with its attempt's start time and devices) one already running."""
    out, err = stdio_paths(r["output_dir"], "job", r["workflow_id"], r["id"], r["run_id"], r["attempt_id"], r["stdio"])
    monitoring = Monitoring(bool(r["monitor_all"]), r["sample_interval"])
    return Runnable(
        r["id"],
        r["workflow_id"],
        r["name"],
        r["command"],
        r["run_id"],
        r["attempt_id"],
        r["num_cpus"],
        env_of(r["env"]),
        r["cwd"],
        r["output_dir"],
        out,
        err,
        r["runtime_seconds"],
        start_time,
        r["num_gpus"],
        gpus.split(",") if gpus else None,
        r["memory_bytes"],
        monitoring.interval_for(r["memory_bytes"]),
        msgspec.json.decode(r["outputs"], type=list[str]) if r["outputs"] else None,
        bool(r["supports_termination"]),
        r["term_signal"] or signal.SIGTERM,
        r["term_grace"],
        bool(r["delete_stdio"]),
        bool(r["limit_resources"]),
        msgspec.json.decode(r["srun"], type=SrunOptions) if r["srun"] else None,
        r["label"],
    )


def runnables_fitting(
    rows: Iterable[sqlite3.Row], cpus: int | None, memory: int | None = None, gpus: int | None = None
) -> list[sqlite3.Row]:
    """The rows, in order, skipping those that no longer fit what is free (None: not counted)."""
    out, free = [], Capacity(cpus, memory, gpus)
    for r in rows:
        need = Requirements(r["num_cpus"] or 0, r["num_gpus"] or 0, memory_bytes=r["memory_bytes"])
        if shortfalls(need, free):
            continue
        free = free.minus(need)
        out.append(r)
    return out


def fact(r: sqlite3.Row) -> L.Job:
    """The lifecycle's facts from a row of `FACT_COLUMNS` or `RUNNABLE_COLUMNS`."""
    return L.Job(
        r["id"],
        r["workflow_id"],
        r["name"],
        S(r["status"]),
        r["run_id"],
        r["attempt_id"],
        r["worker_id"],
        r["runtime_scale"],
        r["memory_scale"],
    )


def facts(tx: Tx, ids: Sequence[int]) -> dict[int, L.Job]:
    out = {}
    for chunk in chunks(list(dict.fromkeys(ids))):
        for r in tx.rows(f"SELECT {FACT_COLUMNS} FROM jobs WHERE id IN ({marks(len(chunk))})", chunk):
            out[r["id"]] = fact(r)
    return out


def apply(tx: Tx, outcomes: Iterable[L.Outcome]) -> list[L.Instruction]:
    """Write outcomes (status changes, attempt records, events), then their follow-ups in the
    same transaction; return the instructions left for the caller (processes to stop)."""
    changes: list[tuple] = []
    records: list[L.Record] = []
    release: list[int] = []
    cascade: list[L.Job] = []
    left: list[L.Instruction] = []
    for out in outcomes:
        if out.change is not None:
            changes.append(_status_row(tx, out.change))
        records.extend(out.records)
        tx.publish(out.events)
        for i in out.instructions:
            if isinstance(i, L.ReleaseDependents):
                release.append(i.job_id)
            elif isinstance(i, L.CancelDownstream):
                cascade.append(i.job)
            else:
                left.append(i)
    if changes:
        tx.many(_SET_STATUS, changes)
    _write_records(tx, records)
    if release:
        _release(tx, release)
    for failed in cascade:
        _cascade(tx, failed)
    return left


def _status_row(tx: Tx, c: L.StatusChange) -> tuple:
    """The parameters of `_SET_STATUS` for one change."""
    return (
        int(c.new),
        c.attempt_id,
        c.run_id,
        c.worker_id,
        c.reason == L.KEEP,
        None if c.reason == L.KEEP else c.reason,
        c.runtime_scale,
        c.memory_scale,
        tx.now,
        c.job_id,
    )


def _write_records(tx: Tx, records: list[L.Record]) -> None:
    """Write attempt records, a statement per kind: opened, closed, closed with a new message,
    decided, recovered."""
    opened: list[L.AttemptOpened] = []
    closed: list[tuple] = []
    overwritten: list[tuple] = []
    decided: list[tuple] = []
    recovered: list[tuple] = []
    for r in records:
        if isinstance(r, L.AttemptClosed):
            (overwritten if r.overwrite_message else closed).append(
                (
                    r.end_time,
                    r.return_code,
                    r.message,
                    r.cause,
                    r.peak_memory,
                    r.cpu_seconds,
                    r.job_id,
                    r.run_id,
                    r.attempt_id,
                )
            )
        elif isinstance(r, L.AttemptOpened):
            opened.append(r)
        elif isinstance(r, L.AttemptDecided):
            decided.append((r.rule_index, r.action, r.job_id, r.run_id, r.attempt_id))
        else:
            recovered.append((r.return_code, r.outcome, r.seconds, r.job_id, r.run_id, r.attempt_id))
    if opened:
        tx.many(
            """INSERT INTO attempts (job_id, workflow_id, run_id, attempt_id, host, pid, worker_id, start_time,
                   stdout_path, stderr_path, gpus, runtime_limit, memory_limit)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                (
                    r.job_id,
                    r.workflow_id,
                    r.run_id,
                    r.attempt_id,
                    r.host,
                    r.pid,
                    r.worker_id,
                    r.start_time,
                    r.stdout_path,
                    r.stderr_path,
                    r.gpus,
                    r.runtime_limit,
                    r.memory_limit,
                )
                for r in opened
            ],
        )
    if closed:
        tx.many(
            """UPDATE attempts SET end_time = ?, return_code = ?, message = coalesce(?, message), cause = ?,
                   peak_rss_bytes = ?, cpu_seconds = ?
                   WHERE job_id = ? AND run_id = ? AND attempt_id = ? AND end_time IS NULL""",
            closed,
        )
    if overwritten:
        tx.many(
            """UPDATE attempts SET end_time = ?, return_code = ?, message = ?, cause = ?,
                   peak_rss_bytes = ?, cpu_seconds = ?
                   WHERE job_id = ? AND run_id = ? AND attempt_id = ? AND end_time IS NULL""",
            overwritten,
        )
    if decided:
        tx.many(
            "UPDATE attempts SET rule_index = ?, action = ? WHERE job_id = ? AND run_id = ? AND attempt_id = ?", decided
        )
    if recovered:
        tx.many(
            """UPDATE attempts SET recovery_rc = ?, recovery_outcome = ?, recovery_seconds = ?
                   WHERE job_id = ? AND run_id = ? AND attempt_id = ?""",
            recovered,
        )


def handle(tx: Tx, stimulus: L.Stimulus, jobs: Iterable[L.Job]) -> list[L.Instruction]:
    """The same stimulus for each job, applied."""
    return apply(tx, (L.handle(stimulus, job) for job in jobs))


def _release(tx: Tx, completed: Sequence[int]) -> None:
    """Count down dependents of completed jobs; those with nothing left become ready."""
    counts: collections.Counter[int] = collections.Counter()
    for chunk in chunks(list(completed)):
        for (jid,) in tx.rows(f"SELECT job_id FROM deps WHERE depends_on IN ({marks(len(chunk))})", chunk):
            counts[jid] += 1
    _count_down(tx, counts)


def _count_down(tx: Tx, counts: collections.Counter[int]) -> None:
    """Lower each job's count of unfinished dependencies by its ended ones; those left with
    none become ready."""
    if not counts:
        return
    tx.many("UPDATE jobs SET pending_deps = pending_deps - ? WHERE id = ?", ((n, jid) for jid, n in counts.items()))
    ready = []
    for chunk in chunks(list(counts)):
        ready += tx.rows(
            f"""SELECT {FACT_COLUMNS} FROM jobs WHERE id IN ({marks(len(chunk))})
                             AND status = {int(S.BLOCKED)} AND pending_deps <= 0""",
            chunk,
        )
    handle(tx, L.DependenciesMet(tx.now), map(fact, ready))


def downstream(tx: Tx, ids: Sequence[int]) -> list[int]:
    out: list[int] = []
    for chunk in chunks(list(ids)):
        out += [
            r[0]
            for r in tx.rows(
                f"""WITH RECURSIVE down(id) AS (
                    SELECT job_id FROM deps WHERE depends_on IN ({marks(len(chunk))})
                    UNION SELECT d.job_id FROM deps d JOIN down ON d.depends_on = down.id)
                SELECT id FROM down""",
                chunk,
            )
        ]
    return list(dict.fromkeys(out))


def _cascade(tx: Tx, failed: L.Job) -> None:
    """Cancel every job a failed one blocks; then say so with one event."""
    tx.publish([L.cascade_summary(failed, cancel_blocked(tx, failed), tx.now)])


def cancel_blocked(tx: Tx, failed: L.Job, among: Collection[int] | None = None) -> int:
    """Cancel every job a failed one blocks (only those `among`, when given: jobs added after it
    ended); return how many. A job that runs whatever became of its dependencies
    (`cancel_on_blocking_job_failure: false`) is not canceled: a failed or canceled dependency
    counts as ended for it, and what it blocks waits for it as usual."""
    cancel: dict[int, None] = {}
    ended: collections.Counter[int] = collections.Counter()  # job -> its dependencies that ended so
    frontier = [failed.id]
    while frontier:
        after = []
        for chunk in chunks(frontier):
            for jid, cancels, status in tx.rows(
                f"""SELECT d.job_id, j.cancel_on_blocking, j.status FROM deps d JOIN jobs j ON j.id = d.job_id
                        WHERE d.depends_on IN ({marks(len(chunk))})""",
                chunk,
            ):
                if status not in (int(S.BLOCKED), int(S.UNINITIALIZED)) or (among is not None and jid not in among):
                    continue
                if not cancels:
                    ended[jid] += 1
                elif jid not in cancel:
                    cancel[jid] = None
                    after.append(jid)
        frontier = after
    blocked = list(facts(tx, list(cancel)).values())
    handle(tx, L.UpstreamFailed(tx.now, failed.id, failed.name), blocked)
    _count_down(tx, ended)
    return len(blocked)


def reset_jobs(tx: Tx, workflow: sqlite3.Row, targets: Sequence[int], what: str) -> int:
    """Put these jobs (those not active) back to run in the workflow's next run; return how many."""
    jobs = [j for j in facts(tx, targets).values() if j.status not in ACTIVE]
    if not jobs:
        return 0
    wf, run_id = workflow["id"], workflow["run_id"] + 1
    tx.run("UPDATE workflows SET run_id = ?, state = 'active' WHERE id = ?", (run_id, wf))
    ids = [j.id for j in jobs]
    # Every job reset counts as not completed for its dependents.
    for chunk in chunks(ids):
        tx.run(f"UPDATE jobs SET run_id = ? WHERE id IN ({marks(len(chunk))})", (run_id, *chunk))
    for chunk in chunks(ids):
        tx.run(
            f"""UPDATE jobs SET pending_deps = (SELECT count(*) FROM deps d JOIN jobs p
                ON p.id = d.depends_on WHERE d.job_id = jobs.id
                AND (p.status != {int(S.COMPLETED)} OR p.run_id = ?))
                WHERE id IN ({marks(len(chunk))})""",
            (run_id, *chunk),
        )
    pending: dict[int, int] = {}
    for chunk in chunks(ids):
        pending.update(
            (r[0], r[1]) for r in tx.rows(f"SELECT id, pending_deps FROM jobs WHERE id IN ({marks(len(chunk))})", chunk)
        )
    apply(tx, (L.handle(L.Reset(tx.now, run_id, pending[j.id] > 0), j) for j in jobs))
    tx.emit(E.WorkflowReset, wf, run_id=run_id, job_count=len(jobs), message=what)
    return len(jobs)
