"""The store's side of running jobs: claims, starts, exits, retry decisions, recovery results
and classifications, each one transaction plus its events. What each does to a job is decided
by `core.lifecycle`, through `store.lifecycle`; a worker's poll (`store.workers`) uses the same
steps inside its own transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Literal

import msgspec

from torcd.core import lifecycle as L
from torcd.core.attempts import Exit, Failure, Start
from torcd.core.retry import RetryDecision, Rule
from torcd.core.status import JobStatus as S
from torcd.credentials import RequestKey
from torcd.errors import InvalidParams, NotFound
from torcd.protocol import Recovery, RecoveryReport, Runnable
from torcd.store.db import Database, Tx
from torcd.store.db import chunks as _chunks
from torcd.store.db import marks as _marks
from torcd.store.lifecycle import RUNNABLE_COLUMNS, apply, env_of, fact, facts, handle, runnable

__all__ = ["ExecutionStore", "Exit", "Failure", "Start"]


# The claim's scan of ready jobs without a label: however many labelled jobs wait for their label.
_UNLABELLED = RUNNABLE_COLUMNS.replace("FROM jobs j", "FROM jobs j INDEXED BY jobs_ready_unlabelled", 1)


def _at_most_labelled(rows: list[sqlite3.Row], most: int) -> list[sqlite3.Row]:
    out, labelled = [], 0
    for r in rows:
        if r["label"] is not None:
            if labelled == most:
                continue
            labelled += 1
        out.append(r)
    return out


class ExecutionStore:
    """The job lifecycle's writes from the dispatcher, the retry engine, the recovery runner and
    the classifying RPCs."""

    def __init__(self, db: Database):
        self.db = db

    async def dispatch(
        self,
        exits: Sequence[Exit],
        starts: Sequence[Start],
        prefetch: int,
        host: str,
        labels: Sequence[tuple[int, str]] = (),
        labelled: int = 0,
    ) -> tuple[list[Runnable], list[int]]:
        """One dispatcher pass in one transaction: record the jobs started since the last pass and
        the exits that arrived, then claim up to `prefetch` ready jobs as `pending`; of those, at
        most `labelled` with a label, each a (workflow, label) in `labels`.

        Returns the claimed jobs and the ids of started jobs that were canceled meanwhile.
        """
        if not exits and not starts and prefetch <= 0:
            return [], []

        def _body(tx: Tx):
            stale = self._start(tx, starts, host) if starts else []
            if exits:
                record_exits(tx, exits)
            claimed = self._claim(tx, prefetch, labels, labelled) if prefetch > 0 else []
            return claimed, stale

        return await self.db.write(_body)

    def _claim(self, tx: Tx, limit: int, labels: Sequence[tuple[int, str]], labelled: int) -> list[Runnable]:
        """Take ready local jobs and mark them `pending` until their processes start. A labelled
        job is taken only while its label is served, and only to start now (never claimed ahead,
        to start after its `run --label` has gone)."""
        rows = tx.rows(
            f"""SELECT j.claim_order AS claim_order_, {_UNLABELLED}
                           WHERE j.status = {int(S.READY)} AND w.executor = 'local' AND NOT w.held
                             AND j.label IS NULL
                           ORDER BY j.claim_order, j.id LIMIT ?""",
            (limit,),
        )
        if labels and labelled > 0:
            for wf, label in labels:
                rows += tx.rows(
                    f"""SELECT j.claim_order AS claim_order_, {RUNNABLE_COLUMNS}
                        WHERE j.workflow_id = ? AND j.label = ? AND j.status = {int(S.READY)}
                          AND w.executor = 'local' AND NOT w.held
                        ORDER BY j.claim_order, j.id LIMIT ?""",
                    (wf, label, labelled),
                )
            rows.sort(key=lambda r: (r["claim_order_"], r["id"]))
            rows = _at_most_labelled(rows, labelled)[:limit]
        handle(tx, L.Claimed(tx.now), map(fact, rows))
        return [runnable(r) for r in rows]

    def _start(self, tx: Tx, starts: Sequence[Start], host: str) -> list[int]:
        """Open the attempts of jobs whose processes started; return jobs no longer claimed."""
        known = facts(tx, [st.job.job_id for st in starts])
        left = apply(
            tx, (L.handle(_started(st, host), known[st.job.job_id]) for st in starts if st.job.job_id in known)
        )
        gone = [st.job.job_id for st in starts if st.job.job_id not in known]  # deleted meanwhile
        return gone + [i.job_id for i in left if isinstance(i, L.StopProcess)]

    async def adopt_pending(self, started: dict[int, int | None], host: str) -> int:
        """After a restart: jobs claimed (`pending`) whose process had started become running attempts
        (with its pid, when still alive); the rest go back to `ready`."""

        def _body(tx: Tx):
            rows = tx.rows(f"SELECT {RUNNABLE_COLUMNS} WHERE j.status = {int(S.PENDING)} AND w.executor = 'local'")
            apply(
                tx,
                (
                    L.handle(
                        _started(Start(runnable(r), started[r["id"]], tx.now), host)
                        if r["id"] in started
                        else L.Requeued(tx.now),
                        fact(r),
                    )
                    for r in rows
                ),
            )
            tx.touched.update(r["workflow_id"] for r in rows)
            return len(rows)

        return await self.db.write(_body)

    async def pending_keys(self) -> list[tuple[int, int, int]]:
        rows = await self.db.rows(f"""SELECT j.id, j.run_id, j.attempt_id FROM jobs j
                                    JOIN workflows w ON w.id = j.workflow_id
                                    WHERE j.status = {int(S.PENDING)} AND w.executor = 'local'""")
        return [tuple(r) for r in rows]

    async def record_exits(self, exits: Sequence[Exit]) -> None:
        """Close attempts; complete jobs that exited 0 and release their dependents.

        A non-zero exit leaves the job `running` with its attempt closed: the
        retry engine decides what comes next (and finds it again after a crash).
        """
        if exits:

            def _body(tx: Tx):
                record_exits(tx, exits)

            return await self.db.write(_body)

    async def terminate(self, exits: Sequence[Exit]) -> None:
        """Record attempts stopped at shutdown; their jobs become `terminated`."""
        if not exits:
            return

        def _body(tx: Tx):
            known = facts(tx, [e.job_id for e in exits])
            apply(tx, (L.handle(L.terminated(e), known[e.job_id]) for e in exits if e.job_id in known))

        return await self.db.write(_body)

    _FAILURES = f"""SELECT j.id, j.workflow_id, j.run_id, j.attempt_id, a.return_code, h.rules,
                       w.use_pending_failed, a.cause FROM jobs j
                    JOIN attempts a ON a.job_id = j.id AND a.run_id = j.run_id AND a.attempt_id = j.attempt_id
                    JOIN workflows w ON w.id = j.workflow_id
                    LEFT JOIN failure_handlers h ON h.id = j.handler_id
                    WHERE j.status = {int(S.RUNNING)} AND a.end_time IS NOT NULL AND a.return_code != 0"""

    async def failures_awaiting_decision(self) -> list[Failure]:
        """Jobs still `running` whose current attempt has exited non-zero."""
        return [_failure(r) for r in await self.db.rows(self._FAILURES)]

    async def failures_for(self, keys: Sequence[tuple[int, int, int]]) -> list[Failure]:
        want = set(keys)
        out = []
        for chunk in _chunks(list(keys)):
            rows = await self.db.rows(f"{self._FAILURES} AND j.id IN ({_marks(len(chunk))})", [k[0] for k in chunk])
            out += [f for f in map(_failure, rows) if (f.job_id, f.run_id, f.attempt_id) in want]
        return out

    async def apply_decisions(self, decisions: Sequence[tuple[Failure, RetryDecision]]) -> None:
        def _body(tx: Tx):
            known = facts(tx, [f.job_id for f, _ in decisions])
            apply(
                tx,
                (
                    L.handle(L.Decided(tx.now, f.run_id, f.attempt_id, f.return_code, d), known[f.job_id])
                    for f, d in decisions
                    if f.job_id in known
                ),
            )

        return await self.db.write(_body)

    async def recoveries_to_run(
        self, job_ids: Sequence[int] | None = None, worker_id: int | None = None
    ) -> list[Recovery]:
        """Recovery scripts to run: by the daemon (no live worker holds the job) or by `worker_id`."""
        if job_ids is not None and not job_ids:
            return []
        return [recovery(r) for r in await self.db.rows(*recoveries_query(job_ids, worker_id))]

    async def finish_recovery(self, report: RecoveryReport, worker_id: int | None = None) -> None:
        """Record a recovery script's result; from a worker, only for a script handed to it."""
        return await self.db.write(lambda tx: finish_recovery(tx, report, worker_id))

    async def classify(
        self,
        decisions: Sequence[tuple[int, Literal["retry", "fail"], str]],
        source: str,
        workflow_id: int | None = None,
        key: RequestKey | None = None,
    ) -> list[int]:
        """Resolve pending_failed jobs, each (job_id, action, reason), all or none: `retry`
        (ready, attempt +1) or `fail` (cascade). With `workflow_id`, every job must be in it."""
        job_ids = [d[0] for d in decisions]

        def _body(tx: Tx):
            jobs = facts(tx, job_ids)
            outcomes = []  # all decided before any is applied: one that does not apply refuses the batch
            for jid, action, reason in decisions:
                if jid not in jobs or (workflow_id is not None and jobs[jid].workflow_id != workflow_id):
                    raise NotFound(f"no job {jid}" + (f" in workflow {workflow_id}" if workflow_id else ""))
                outcomes.append(L.handle(L.Classified(tx.now, action, reason, source), jobs[jid]))
            if len(set(job_ids)) != len(job_ids):
                raise InvalidParams("a job is classified twice", {"field": "$.classifications"})
            apply(tx, outcomes)
            return job_ids

        return await self.db.write(_body, key=key)

    async def running_attempts(self) -> list[Runnable]:
        """Local attempts that started and never recorded an exit (after a crash: to adopt)."""
        rows = await self.db.rows(
            f"""SELECT a.start_time AS attempt_start, a.gpus AS attempt_gpus, {RUNNABLE_COLUMNS}
                JOIN attempts a ON a.job_id = j.id
                AND a.run_id = j.run_id AND a.attempt_id = j.attempt_id
                WHERE a.end_time IS NULL AND a.worker_id IS NULL"""
        )
        return [runnable(r, r["attempt_start"], r["attempt_gpus"]) for r in rows]

    async def running_pids(self) -> dict[tuple[int, int, int], int]:
        """The pid recorded at the start of each local attempt that never recorded an exit."""
        rows = await self.db.rows(
            """SELECT job_id, run_id, attempt_id, pid FROM attempts
                WHERE end_time IS NULL AND worker_id IS NULL AND pid IS NOT NULL"""
        )
        return {(r["job_id"], r["run_id"], r["attempt_id"]): r["pid"] for r in rows}


def record_exits(tx: Tx, exits: Sequence[Exit]) -> None:
    """Close attempts; a job that exited 0 completes and releases its dependents."""
    known = facts(tx, [e.job_id for e in exits])
    exits = _with_workflow_codes(tx, exits, {j: f.workflow_id for j, f in known.items()})
    apply(tx, (L.handle(L.exited(e), known[e.job_id]) for e in exits if e.job_id in known))


def _with_workflow_codes(tx: Tx, exits: Sequence[Exit], workflow_of: dict[int, int]) -> Sequence[Exit]:
    """A job stopped for its time or memory is recorded with the exit code its workflow's
    execution_config gives those (Torc's timeout_exit_code, oom_exit_code), where it gives one."""
    caused = {workflow_of[e.job_id] for e in exits if e.cause in ("timeout", "oom") and e.job_id in workflow_of}
    if not caused:
        return exits
    codes = {
        wf: {"timeout": t, "oom": o}
        for wf, t, o in tx.rows(
            f"SELECT id, timeout_exit_code, oom_exit_code FROM workflows WHERE id IN ({_marks(len(caused))})",
            list(caused),
        )
    }
    out = []
    for e in exits:
        code = codes.get(workflow_of.get(e.job_id, 0), {}).get(e.cause or "")
        out.append(e if code is None else msgspec.structs.replace(e, return_code=code))
    return out


def set_pids(tx: Tx, pids: Sequence[tuple[int, int, int, int]]) -> None:
    """Record (pid, job_id, run_id, attempt_id) of started processes."""
    if pids:
        tx.many("UPDATE attempts SET pid = ? WHERE job_id = ? AND run_id = ? AND attempt_id = ?", pids)


def finish_recovery(tx: Tx, report: RecoveryReport, worker_id: int | None = None) -> None:
    """Record a recovery script's result; from a worker, only for a script handed to it."""
    job = facts(tx, [report.job_id]).get(report.job_id)
    if job is None:
        return
    if worker_id is not None and (
        job.worker_id != worker_id
        or (
            tx.one(
                "SELECT recovery_outcome FROM attempts WHERE job_id = ? AND run_id = ? AND attempt_id = ?",
                (job.id, report.run_id, report.attempt_id),
            )
            or [None]
        )[0]
        != "running"
    ):
        return
    apply(
        tx,
        [
            L.handle(
                L.RecoveryDone(
                    tx.now,
                    report.run_id,
                    report.attempt_id,
                    report.ok,
                    report.return_code,
                    report.message,
                    report.seconds,
                ),
                job,
            )
        ],
    )


def recoveries_query(job_ids: Sequence[int] | None = None, worker_id: int | None = None) -> tuple[str, list]:
    """The query for recovery scripts to run: by the daemon (no live worker holds the job) or by
    `worker_id`; read its rows with `recovery`."""
    where = f"j.status = {int(S.RECOVERING)}"
    args: list = []
    if worker_id is not None:
        # Unfinished ones again too: the reply that handed them out may have been lost.
        where += " AND j.worker_id = ? AND coalesce(a.recovery_outcome, 'running') = 'running'"
        args.append(worker_id)
    else:
        where += (
            " AND (j.worker_id IS NULL OR NOT EXISTS (SELECT 1 FROM workers wk"
            " WHERE wk.id = j.worker_id AND wk.state = 'active'))"
        )
    if job_ids is not None:
        where += f" AND j.id IN ({_marks(len(job_ids))})"
        args += list(job_ids)
    return (
        f"""SELECT j.id, j.workflow_id, j.name, j.run_id, j.attempt_id, j.env, a.return_code, a.rule_index,
                   h.rules, w.cwd, w.output_dir FROM jobs j
                JOIN attempts a ON a.job_id = j.id AND a.run_id = j.run_id AND a.attempt_id = j.attempt_id
                JOIN workflows w ON w.id = j.workflow_id
                JOIN failure_handlers h ON h.id = j.handler_id WHERE {where}""",
        args,
    )


def recovery(r: sqlite3.Row) -> Recovery:
    rule = msgspec.json.decode(r["rules"], type=list[Rule])[r["rule_index"]]
    return Recovery(
        r["id"],
        r["workflow_id"],
        r["name"],
        r["run_id"],
        r["attempt_id"],
        r["return_code"],
        rule.recovery_script or "",
        rule.recovery_timeout,
        env_of(r["env"]),
        r["cwd"],
        r["output_dir"],
    )


def _started(st: Start, host: str) -> L.Started:
    j = st.job
    return L.Started(
        st.time,
        j.run_id,
        j.attempt_id,
        host,
        st.pid,
        j.stdout_path,
        j.stderr_path,
        ",".join(j.gpus) if j.gpus else None,
        j.runtime,
        j.memory,
    )


def _failure(r: sqlite3.Row) -> Failure:
    rules = msgspec.json.decode(r["rules"], type=list[Rule]) if r["rules"] else None
    upf = r["use_pending_failed"]
    return Failure(
        r["id"],
        r["workflow_id"],
        r["run_id"],
        r["attempt_id"],
        r["return_code"],
        rules,
        None if upf is None else bool(upf),
        r["cause"],
    )
