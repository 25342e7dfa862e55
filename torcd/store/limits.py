"""The store's side of `recover`: gather each failed or pending_failed job's last attempt, let
`core.recover` decide, then write the new limits (one event per change, old and new values) and
reset the jobs to retry with what they block, in one transaction. A pending_failed job retried
so is classified by recover: a job_classified event with source `recover` and the reason."""

from __future__ import annotations

from torcd import events as E
from torcd.core import limits as R
from torcd.core.status import ACTIVE
from torcd.core.status import JobStatus as S
from torcd.errors import InvalidTransition, NotFound
from torcd.store.db import Tx, require_workflow
from torcd.store.effective_limits import effective_runtime
from torcd.store.lifecycle import downstream, reset_jobs

_FAILED = f"""SELECT j.id, j.name, j.status, coalesce(a.return_code, 1) AS rc, a.cause,
                     a.end_time - a.start_time AS wall, a.peak_rss_bytes,
                     coalesce(a.memory_limit, j.memory_bytes) AS memory,
                     coalesce(a.runtime_limit, j.runtime_seconds) AS runtime
              FROM jobs j LEFT JOIN attempts a
                   ON a.job_id = j.id AND a.run_id = j.run_id AND a.attempt_id = j.attempt_id
              WHERE j.workflow_id = ? AND j.status IN ({int(S.FAILED)}, {int(S.PENDING_FAILED)}) ORDER BY j.id"""
_ACTIVE_SQL = ",".join(str(int(s)) for s in ACTIVE)


def recover(
    tx: Tx,
    wf: int,
    memory_multiplier: float,
    runtime_multiplier: float,
    retry_unknown: bool,
    dry_run: bool,
    source: str = "cli",
    reason: str = "",
) -> tuple[list[R.Adjustment], int]:
    """The plan for the workflow's failed and pending_failed jobs and, unless a dry run, how many jobs it reset."""
    row = require_workflow(tx, wf)
    busy = tx.one_row(f"SELECT count(*) FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL})", (wf,))[0]
    if busy:
        raise InvalidTransition(
            f"workflow {wf} still has {busy} unfinished jobs; recover it once they have ended (or cancel it)"
        )
    failed = [
        R.FailedAttempt(
            r["id"],
            r["name"],
            r["rc"],
            r["cause"],
            r["wall"],
            r["peak_rss_bytes"],
            r["memory"],
            r["runtime"],
            "pending_failed" if r["status"] == S.PENDING_FAILED else "failed",  # the only two _FAILED selects
        )
        for r in tx.rows(_FAILED, (wf,))
    ]
    plan = R.plan(failed, memory_multiplier, runtime_multiplier, retry_unknown)
    retried = [a for a in plan if a.retry]
    if dry_run or not retried:
        return plan, 0
    for a in retried:
        for resource, column, change in (
            ("memory", "memory_bytes", a.memory),
            ("runtime", "runtime_seconds", a.runtime),
        ):
            if change is None:
                continue
            # The job's own limit: jobs sharing its requirement keep theirs.
            tx.run(f"UPDATE jobs SET {column} = ? WHERE id = ?", (change[1], a.job_id))
            tx.emit(
                E.JobResourcesChanged,
                wf,
                job_id=a.job_id,
                job_name=a.name,
                resource=resource,
                old_value=change[0],
                new_value=change[1],
                source=source,
                message=R.reason_for(a, reason),
            )
    parked = {
        a.job_id: (a, tx.one_row("SELECT run_id, attempt_id FROM jobs WHERE id = ?", (a.job_id,)))
        for a in retried
        if a.status == "pending_failed"
    }
    ids = [a.job_id for a in retried]
    reset = reset_jobs(tx, row, sorted(set(ids) | set(downstream(tx, ids))), "recover")
    for job_id, (a, (run_id, attempt_id)) in parked.items():
        # The reset took it out of pending_failed: say that recover classified that attempt, and why.
        status = S(tx.one_row("SELECT status FROM jobs WHERE id = ?", (job_id,))[0]).label
        tx.emit(
            E.JobClassified,
            wf,
            job_id=job_id,
            job_name=a.name,
            run_id=run_id,
            attempt_id=attempt_id,
            action="retry",
            status=status,
            source="recover",
            message=f"{R.reason_for(a, reason)} (by {source})",
        )
    return plan, reset


def update_resources(
    tx: Tx, job_id: int, memory: int | None, runtime: float | None, cpus: int | None, source: str, reason: str
) -> dict[str, tuple[float | None, float]]:
    """Set a job's limits for its next attempts (what multipliers had grown starts over); each
    change is an event with the old and new value. Refused while the job runs."""
    # The old memory as the product it has always been reported as (a float in the event), not the
    # whole-byte effective limit a claim compares.
    row = tx.one(
        f"""SELECT id, workflow_id, name, status, num_cpus, memory_bytes * memory_scale AS memory,
                     {effective_runtime("")} AS runtime FROM jobs WHERE id = ?""",
        (job_id,),
    )
    if row is None:
        raise NotFound(f"no job {job_id}")
    if S(row["status"]) in (S.PENDING, S.RUNNING, S.RECOVERING):
        raise InvalidTransition(
            f"job {job_id} ({row['name']}) is {S(row['status']).label}; change its resources "
            "once this attempt has ended"
        )
    changes = {}
    for resource, column, scale, new in (
        ("memory", "memory_bytes", "memory_scale", memory),
        ("runtime", "runtime_seconds", "runtime_scale", runtime),
        ("num_cpus", "num_cpus", None, cpus),
    ):
        if new is None:
            continue
        old = row[resource if resource != "num_cpus" else "num_cpus"]
        tx.run(f"UPDATE jobs SET {column} = ?{f', {scale} = 1' if scale else ''} WHERE id = ?", (new, job_id))
        tx.emit(
            E.JobResourcesChanged,
            row["workflow_id"],
            job_id=job_id,
            job_name=row["name"],
            resource=resource,
            old_value=old,
            new_value=new,
            source=source,
            message=reason,
        )
        changes[resource] = (old, new)
    return changes
