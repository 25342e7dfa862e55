"""The SQLite store: the daemon's only writer and the source of truth.

Every state change and the event rows that describe it commit in one transaction; `on_commit`
(the event bus) hears of them only afterwards. What a change does to a job is decided by
`core.lifecycle`, through `store_lifecycle`; this module gathers the jobs concerned and says
what happened to them.
"""

from __future__ import annotations

import collections
import os
import sqlite3
from collections.abc import Iterable, Sequence

import msgspec

from torcd import events as E
from torcd.core import lifecycle as L
from torcd.core.attempts import Exit, Failure, Start
from torcd.core.retry import RetryDecision, Rule
from torcd.core.status import ACTIVE, FAILED_LIKE, FINAL, JobStatus
from torcd.credentials import RequestKey
from torcd.store.db import Database, StoreError, Tx, require_workflow, chunks as _chunks, encode as _encode, marks as _marks
from torcd.errors import InvalidParams, InvalidTransition, NotFound
from torcd.events import Event
from torcd.protocol import (MAX_USER_DATA_ENTRIES, AttemptInfo, JobInfo, Recovery, RecoveryReport, Runnable,
                            WorkflowSummary)
from torcd.spec.parse import Workflow, on_slurm
from torcd.store import actions as store_actions
from torcd.store.actions import ActionStore
from torcd.store.lifecycle import (FACT_COLUMNS, RUNNABLE_COLUMNS, apply, downstream, env_of, fact, facts, handle,
                                   reset_jobs, runnable)
from torcd.store import limits as store_recover
from torcd.core.limits import Adjustment
from torcd.store.slurm import SlurmStore

__all__ = ["Exit", "Failure", "Start", "Store", "StoreError", "Tx"]

S = JobStatus
_ACTIVE_SQL = ",".join(str(int(s)) for s in ACTIVE)
_event_decoder = msgspec.json.Decoder(Event)
_COUNTS = "SELECT status, count(*) FROM jobs WHERE workflow_id = ? GROUP BY status"
_JOB_INFO = """SELECT j.*, h.name AS handler,
                   (SELECT return_code FROM attempts a WHERE a.job_id = j.id
                    ORDER BY a.run_id DESC, a.attempt_id DESC LIMIT 1) AS rc,
                   (SELECT stderr_path FROM attempts a WHERE a.job_id = j.id
                    ORDER BY a.run_id DESC, a.attempt_id DESC LIMIT 1) AS stderr_path
               FROM jobs j LEFT JOIN failure_handlers h ON h.id = j.handler_id"""


RECOVERY_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)  # seconds
RUNTIME_BUCKETS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 7 * 86400)  # seconds
MEMORY_BUCKETS = tuple(1 << n for n in range(24, 41, 2))  # 16 MiB to 1 TiB, by fours


def _histogram(value: str, buckets: tuple) -> str:
    """count, sum and the cumulative bucket counts of `value` over ended attempts, by workflow."""
    return f"""SELECT workflow_id, count(*), total({value}),
                      {", ".join(f"sum({value} <= {b})" for b in buckets)}
               FROM attempts WHERE end_time IS NOT NULL AND {value} IS NOT NULL GROUP BY workflow_id"""


_METRIC_QUERIES = {
    "jobs": "SELECT workflow_id, status, count(*) FROM jobs GROUP BY workflow_id, status",
    "attempts": "SELECT workflow_id, count(*) FROM attempts GROUP BY workflow_id",
    "decisions": """SELECT a.workflow_id, coalesce(h.name, ''), coalesce(a.rule_index, -1), a.return_code,
                           a.action, count(*) FROM attempts a JOIN jobs j ON j.id = a.job_id
                    LEFT JOIN failure_handlers h ON h.id = j.handler_id WHERE a.action IS NOT NULL
                    GROUP BY 1, 2, 3, 4, 5""",
    "recoveries": _histogram("recovery_seconds", RECOVERY_BUCKETS),
    "runtimes": _histogram("end_time - start_time", RUNTIME_BUCKETS),
    "peak_memory": _histogram("peak_rss_bytes", MEMORY_BUCKETS),
    "allocations": "SELECT workflow_id, state, count(*) FROM allocations GROUP BY workflow_id, state",
}


def _labelled(rows: Iterable[Sequence]) -> dict[str, int]:
    return {S(status).label: n for status, n in rows}



class Store(SlurmStore, ActionStore, Database):
    """The daemon's state: reads, and one transaction per change plus its events."""

    def settle(self, tx: Tx) -> None:
        """Mark touched workflows done when nothing more can run, active again otherwise."""
        for wf in sorted(tx.touched):
            row = tx.one("SELECT state FROM workflows WHERE id = ?", (wf,))
            if row is None or row[0] == "canceled":
                continue
            busy = (tx.one(
                f"SELECT EXISTS (SELECT 1 FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL}))",
                (wf,)))[0] or (wf in self.with_actions and store_actions.mark_due(tx, wf, idle=True))
            if busy:
                if row[0] != "active":
                    tx.run("UPDATE workflows SET state = 'active' WHERE id = ?", (wf,))
                continue
            counts = _labelled(tx.rows(_COUNTS, (wf,)))
            state = "awaiting_classification" if counts.get("pending_failed") else "done"
            if state != row[0]:
                tx.run("UPDATE workflows SET state = ? WHERE id = ?", (state, wf))
                summary = ", ".join(f"{n} {k}" for k, n in counts.items())
                kind = E.WorkflowAwaitingClassification if state == "awaiting_classification" else E.WorkflowDone
                tx.events.append(kind(workflow_id=wf, time=tx.now, message=summary, status=_outcome(counts)))

    # -- reads -------------------------------------------------------------

    async def _counts(self, wf: int) -> dict[str, int]:
        return _labelled(await self._rows(_COUNTS, (wf,)))

    async def workflow(self, wf: int) -> WorkflowSummary:
        rows = await self._rows("SELECT * FROM workflows WHERE id = ?", (wf,))
        if not rows:
            raise NotFound(f"no workflow {wf}")
        return _summary(rows[0], await self._counts(wf))

    async def workflows(self) -> list[WorkflowSummary]:
        rows = await self._rows("SELECT * FROM workflows ORDER BY id")
        counts: dict[int, list] = collections.defaultdict(list)
        for wf, status, n in await self._rows(
                "SELECT workflow_id, status, count(*) FROM jobs GROUP BY workflow_id, status"):
            counts[wf].append((status, n))
        return [_summary(r, _labelled(counts[r["id"]])) for r in rows]

    async def jobs(self, wf: int, status: JobStatus | None = None, limit: int = 10_000,
                   offset: int = 0) -> list[JobInfo]:
        await self.workflow(wf)
        where, args = "j.workflow_id = ?", [wf]
        if status is not None:
            where += " AND j.status = ?"
            args.append(int(status))
        rows = await self._rows(
            f"{_JOB_INFO} WHERE {where} ORDER BY j.id LIMIT ? OFFSET ?", (*args, limit, offset))
        return [_job_info(r) for r in rows]

    async def job(self, job_id: int) -> JobInfo:
        rows = await self._rows(
            f"{_JOB_INFO} WHERE j.id = ?",
            (job_id,))
        if not rows:
            raise NotFound(f"no job {job_id}")
        info = _job_info(rows[0])
        info.depends_on = [r[0] for r in await self._rows(
            "SELECT depends_on FROM deps WHERE job_id = ? ORDER BY depends_on", (job_id,))]
        return info

    async def attempts(self, job_id: int) -> list[AttemptInfo]:
        await self.job(job_id)
        rows = await self._rows(
            "SELECT * FROM attempts WHERE job_id = ? ORDER BY run_id, attempt_id", (job_id,))
        return [_attempt_info(r) for r in rows]

    async def results(self, wf: int, all_runs: bool, failed: bool, return_code: int | None,
                      limit: int) -> list[AttemptInfo]:
        """Every job's attempts in the workflow (its current run unless `all_runs`), with the job's name."""
        await self.workflow(wf)
        rows = await self._rows(
            """SELECT a.*, j.name AS job_name FROM attempts a JOIN jobs j ON j.id = a.job_id
               WHERE a.workflow_id = ? AND (? OR a.run_id = j.run_id) AND (NOT ? OR a.return_code != 0)
                 AND (? IS NULL OR a.return_code = ?)
               ORDER BY a.job_id, a.run_id, a.attempt_id LIMIT ?""",
            (wf, all_runs, failed, return_code, return_code, limit))
        return [_attempt_info(r, r["job_name"]) for r in rows]

    async def files(self, wf: int, limit: int) -> list[sqlite3.Row]:
        """The workflow's files with the job that writes each and the jobs that read it."""
        await self.workflow(wf)
        return await self._rows(
            """SELECT f.name, f.path, p.name AS producer, w.cwd,
                      (SELECT group_concat(j.name, char(31)) FROM file_readers r JOIN jobs j ON j.id = r.job_id
                       WHERE r.file_id = f.id) AS readers
               FROM files f JOIN workflows w ON w.id = f.workflow_id LEFT JOIN jobs p ON p.id = f.producer
               WHERE f.workflow_id = ? ORDER BY f.id LIMIT ?""", (wf, limit))

    async def user_data(self, wf: int, name: str | None = None, limit: int = 1) -> list[sqlite3.Row]:
        """The workflow's user data (one entry, by name), with the job that writes each."""
        await self.workflow(wf)
        return await self._rows(
            f"""SELECT u.name, u.data, u.is_ephemeral, u.updated, p.name AS producer FROM user_data u
                LEFT JOIN jobs p ON p.id = u.producer WHERE u.workflow_id = ? {"AND u.name = ?" if name else ""}
                ORDER BY u.id LIMIT ?""", (wf, name, 1) if name else (wf, limit))

    async def set_user_data(self, wf: int, name: str, data: bytes, may_add: bool) -> None:
        """Replace an entry's value, or add an entry the spec did not declare (`may_add`: not
        from an allocation, whose jobs write what the spec declared), up to a number of them."""
        def _body(tx: Tx):
            require_workflow(tx, wf)
            if tx.db.execute("UPDATE user_data SET data = ?, updated = ? WHERE workflow_id = ? AND name = ?",
                             (data.decode(), tx.now, wf, name)).rowcount:
                return
            if not may_add:
                raise NotFound(f"workflow {wf} declares no user data named {name!r}; jobs in an allocation "
                               "write only what the spec declares")
            if tx.one("SELECT count(*) FROM user_data WHERE workflow_id = ?", (wf,))[0] >= MAX_USER_DATA_ENTRIES:
                raise InvalidParams(f"workflow {wf} has {MAX_USER_DATA_ENTRIES:,} user data entries, the most it "
                                    "may have", {"field": "$.name"})
            tx.run("INSERT INTO user_data (workflow_id, name, data, initial, updated) VALUES (?, ?, ?, 'null', ?)",
                   (wf, name, data.decode(), tx.now))
        await self.write(_body)

    async def events(self, wf: int, after: int = 0, limit: int = 10_000) -> list[Event]:
        await self.workflow(wf)
        rows = await self._rows(
            "SELECT body FROM events WHERE workflow_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (wf, after, limit))
        return [_event_decoder.decode(r[0]) for r in rows]

    # -- writes: workflows -------------------------------------------------

    async def create_workflow(self, spec: Workflow, cwd: str, spec_path: str, executor: str = "local",
                              account: str | None = None, key: RequestKey | None = None) -> int:
        output_dir = os.path.normpath(os.path.join(cwd, spec.output_dir))
        upf = None if spec.use_pending_failed is None else int(spec.use_pending_failed)
        schedulers, jobs = list(spec.schedulers), spec.jobs
        if executor == "slurm":
            schedulers, jobs = on_slurm(spec, account)
        def _body(tx: Tx):
            wf = tx.run(
                """INSERT INTO workflows (name, description, cwd, spec_path, output_dir, use_pending_failed,
                   created, executor, account, monitor_all, sample_interval, compute_node, about)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (spec.name, spec.description, cwd, spec_path, output_dir, upf, tx.now, executor, account,
                 int(spec.monitoring.all_jobs), spec.monitoring.interval, _encode(spec.compute_node),
                 _encode(msgspec.structs.replace(spec.about, user=spec.about.user or _user_name()))))
            handler_ids = {}
            for name, rules in spec.failure_handlers.items():
                handler_ids[name] = tx.run(
                    "INSERT INTO failure_handlers (workflow_id, name, rules) VALUES (?, ?, ?)",
                    (wf, name, _encode(rules)))
            tx.many("INSERT INTO schedulers (workflow_id, name, spec) VALUES (?, ?, ?)",
                          ((wf, sc.name, _encode(sc)) for sc in schedulers))
            # Ids given here, so that the claim order (one of the workflow's own ids, in the order
            # its jobs_sort_method says) keeps workflows first come, first served.
            base = tx.one("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0) + 1")[0]
            sorted_ = any(j.claim_order for j in jobs)
            tx.many(
                """INSERT INTO jobs (id, claim_order, workflow_id, name, command, status, num_cpus, env, handler_id,
                   pending_deps, updated, scheduler, num_gpus, memory_bytes, runtime_seconds, cancel_on_blocking,
                   outputs, supports_termination)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                ((base + k, base + (j.claim_order if sorted_ else k), wf, j.name, j.command,
                  int(S.BLOCKED if j.depends_on else S.READY), j.num_cpus,
                  _encode(j.env) if j.env else None, handler_ids.get(j.failure_handler),
                  len(j.depends_on), tx.now, j.scheduler, j.num_gpus, j.memory_bytes, j.runtime_seconds,
                  int(j.cancel_on_blocking), _encode([spec.files[f].path for f in j.outputs]) if j.outputs else None,
                  int(j.supports_termination)) for k, j in enumerate(jobs)))
            ids = {name: jid for jid, name in tx.rows(
                "SELECT id, name FROM jobs WHERE workflow_id = ?", (wf,))}
            tx.many("INSERT INTO deps (job_id, depends_on) VALUES (?, ?)",
                          ((ids[j.name], ids[d]) for j in jobs for d in j.depends_on))
            if spec.files:
                _insert_files(tx, wf, spec, ids)
            if spec.actions:
                store_actions.insert_actions(tx, wf, spec.actions, ids)
                self.with_actions.add(wf)  # before the commit's settle, which looks at it
            if spec.user_data:
                writer = {out: ids[j.name] for j in jobs for out in j.data_outputs}
                tx.many("""INSERT INTO user_data (workflow_id, name, data, initial, is_ephemeral, producer, updated)
                           VALUES (?, ?, ?, ?, ?, ?, ?)""",
                        ((wf, d.name, _encode(d.data), _encode(d.data), int(d.is_ephemeral), writer.get(d.name),
                          tx.now) for d in spec.user_data.values()))
            tx.emit(E.WorkflowCreated, wf, job_count=len(jobs), message=spec.name)
            return wf
        return await self.write(_body, key=key)

    async def cancel_workflow(self, wf: int) -> list[int]:
        """Cancel every unfinished job; return the ids of jobs that had a process running."""
        def _body(tx: Tx):
            require_workflow(tx, wf)
            rows = tx.rows(f"SELECT {FACT_COLUMNS} FROM jobs "
                           f"WHERE workflow_id = ? AND status NOT IN ({','.join(str(int(s)) for s in FINAL)})", (wf,))
            stop = handle(tx, L.Canceled(tx.now), map(fact, rows))
            tx.run("UPDATE workflows SET state = 'canceled' WHERE id = ?", (wf,))
            store_actions.disarm_due(tx, wf)
            tx.emit(E.WorkflowCanceled, wf, job_count=len(rows))
            return [i.job_id for i in stop if isinstance(i, L.StopProcess)]
        return await self.write(_body)

    async def delete_workflow(self, wf: int, key: RequestKey | None = None) -> None:
        def _body(tx: Tx):
            require_workflow(tx, wf)
            busy = tx.one(
                f"SELECT count(*) FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL})", (wf,))
            if busy[0]:
                raise InvalidTransition(f"workflow {wf} has {busy[0]} unfinished jobs; cancel it first")
            tx.run("DELETE FROM deps WHERE job_id IN (SELECT id FROM jobs WHERE workflow_id = ?)", (wf,))
            tx.run("DELETE FROM file_readers WHERE file_id IN (SELECT id FROM files WHERE workflow_id = ?)", (wf,))
            tx.run("DELETE FROM action_jobs WHERE action_id IN (SELECT id FROM actions WHERE workflow_id = ?)", (wf,))
            for table in ("attempts", "jobs", "failure_handlers", "events", "schedulers", "allocations", "workers",
                          "files", "user_data", "actions"):
                tx.run(f"DELETE FROM {table} WHERE workflow_id = ?", (wf,))
            tx.run("DELETE FROM workflows WHERE id = ?", (wf,))
            self.with_actions.discard(wf)
        return await self.write(_body, key=key)

    async def reset_status(self, wf: int, failed_only: bool, key: RequestKey | None = None) -> int:
        """Put failed (or all) jobs and what they block back to run in a new run."""
        def _body(tx: Tx):
            row = require_workflow(tx, wf)
            if failed_only:
                seeds = [r[0] for r in tx.rows(
                    f"SELECT id FROM jobs WHERE workflow_id = ? AND status IN "
                    f"({','.join(str(int(s)) for s in FAILED_LIKE)})", (wf,))]
                targets = sorted(set(seeds) | set(downstream(tx, seeds)))
            else:
                busy = tx.one(
                    f"SELECT count(*) FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL})", (wf,))
                if busy[0]:
                    raise InvalidTransition(
                        f"workflow {wf} has {busy[0]} unfinished jobs; cancel it or wait before a full reset")
                targets = [r[0] for r in tx.rows("SELECT id FROM jobs WHERE workflow_id = ?", (wf,))]
                tx.run("UPDATE user_data SET data = initial, updated = ? WHERE workflow_id = ? AND is_ephemeral",
                       (tx.now, wf))
            store_actions.rearm(tx, wf)
            return reset_jobs(tx, row, targets, "failed jobs" if failed_only else "all jobs")
        return await self.write(_body, key=key)

    async def recover(self, wf: int, memory_multiplier: float, runtime_multiplier: float, retry_unknown: bool,
                      dry_run: bool, key: RequestKey | None = None, source: str = "cli",
                      reason: str = "") -> tuple[list[Adjustment], int]:
        """Raise the limits of failed jobs by what failed them and run them again (`core.recover`)."""
        return await self.write(lambda tx: store_recover.recover(tx, wf, memory_multiplier, runtime_multiplier,
                                                                 retry_unknown, dry_run, source, reason),
                                key=None if dry_run else key)

    async def update_resources(self, job_id: int, memory: int | None, runtime: float | None, cpus: int | None,
                               source: str, reason: str, key: RequestKey | None = None) -> dict:
        return await self.write(lambda tx: store_recover.update_resources(tx, job_id, memory, runtime, cpus, source,
                                                                          reason), key=key)

    async def metric_rows(self) -> dict[str, list[sqlite3.Row]]:
        """Aggregates for /metrics, all from the tables (so they survive restarts)."""
        return {name: await self._rows(sql) for name, sql in _METRIC_QUERIES.items()}

    # -- writes: execution -------------------------------------------------

    async def dispatch(self, exits: Sequence[Exit], starts: Sequence[Start], prefetch: int,
                       host: str) -> tuple[list[Runnable], list[int]]:
        """One dispatcher pass in one transaction: record the jobs started since the last pass and
        the exits that arrived, then claim up to `prefetch` ready jobs as `pending`.

        Returns the claimed jobs and the ids of started jobs that were canceled meanwhile.
        """
        if not exits and not starts and prefetch <= 0:
            return [], []
        def _body(tx: Tx):
            stale = self._start(tx, starts, host) if starts else []
            if exits:
                self._record_exits(tx, exits)
            claimed = self._claim(tx, prefetch) if prefetch > 0 else []
            return claimed, stale
        return await self.write(_body)

    def _claim(self, tx: Tx, limit: int) -> list[Runnable]:
        """Take ready local jobs and mark them `pending` until their processes start."""
        rows = tx.rows(f"""SELECT {RUNNABLE_COLUMNS}
                           WHERE j.status = {int(S.READY)} AND w.executor = 'local' AND NOT w.held
                           ORDER BY j.claim_order, j.id LIMIT ?""", (limit,))
        handle(tx, L.Claimed(tx.now), map(fact, rows))
        return [runnable(r) for r in rows]

    def _start(self, tx: Tx, starts: Sequence[Start], host: str) -> list[int]:
        """Open the attempts of jobs whose processes started; return jobs no longer claimed."""
        known = facts(tx, [st.job.job_id for st in starts])
        left = apply(tx, (L.handle(_started(st, host), known[st.job.job_id]) for st in starts
                          if st.job.job_id in known))
        gone = [st.job.job_id for st in starts if st.job.job_id not in known]  # deleted meanwhile
        return gone + [i.job_id for i in left if isinstance(i, L.StopProcess)]

    async def adopt_pending(self, started: dict[int, int | None], host: str) -> int:
        """After a restart: jobs claimed (`pending`) whose process had started become running attempts
        (with its pid, when still alive); the rest go back to `ready`."""
        def _body(tx: Tx):
            rows = tx.rows(f"SELECT {RUNNABLE_COLUMNS} WHERE j.status = {int(S.PENDING)} AND w.executor = 'local'")
            apply(tx, (L.handle(_started(Start(runnable(r), started[r["id"]], tx.now), host)
                                if r["id"] in started else L.Requeued(tx.now), fact(r)) for r in rows))
            tx.touched.update(r["workflow_id"] for r in rows)
            return len(rows)
        return await self.write(_body)

    async def pending_keys(self) -> list[tuple[int, int, int]]:
        rows = await self._rows(f"""SELECT j.id, j.run_id, j.attempt_id FROM jobs j
                                    JOIN workflows w ON w.id = j.workflow_id
                                    WHERE j.status = {int(S.PENDING)} AND w.executor = 'local'""")
        return [tuple(r) for r in rows]

    async def set_pids(self, pids: Sequence[tuple[int, int, int, int]]) -> None:
        """Record (pid, job_id, run_id, attempt_id) of started processes."""
        if pids:
            def _body(tx: Tx):
                tx.many("UPDATE attempts SET pid = ? WHERE job_id = ? AND run_id = ? AND attempt_id = ?",
                              pids)
            return await self.write(_body)

    async def record_exits(self, exits: Sequence[Exit]) -> None:
        """Close attempts; complete jobs that exited 0 and release their dependents.

        A non-zero exit leaves the job `running` with its attempt closed: the
        retry engine decides what comes next (and finds it again after a crash).
        """
        if exits:
            def _body(tx: Tx):
                self._record_exits(tx, exits)
            return await self.write(_body)

    def _record_exits(self, tx: Tx, exits: Sequence[Exit]) -> None:
        known = facts(tx, [e.job_id for e in exits])
        apply(tx, (L.handle(L.Exited(e.end_time, e.run_id, e.attempt_id, e.return_code, e.message, e.cause,
                                     e.peak_memory, e.cpu_seconds),
                            known[e.job_id])
                   for e in exits if e.job_id in known))

    async def terminate(self, exits: Sequence[Exit]) -> None:
        """Record attempts stopped at shutdown; their jobs become `terminated`."""
        if not exits:
            return
        def _body(tx: Tx):
            known = facts(tx, [e.job_id for e in exits])
            apply(tx, (L.handle(L.Terminated(e.end_time, e.run_id, e.attempt_id, e.return_code, e.message),
                                known[e.job_id]) for e in exits if e.job_id in known))
        return await self.write(_body)

    _FAILURES = f"""SELECT j.id, j.workflow_id, j.run_id, j.attempt_id, a.return_code, h.rules,
                       w.use_pending_failed, a.cause FROM jobs j
                    JOIN attempts a ON a.job_id = j.id AND a.run_id = j.run_id AND a.attempt_id = j.attempt_id
                    JOIN workflows w ON w.id = j.workflow_id
                    LEFT JOIN failure_handlers h ON h.id = j.handler_id
                    WHERE j.status = {int(S.RUNNING)} AND a.end_time IS NOT NULL AND a.return_code != 0"""

    async def failures_awaiting_decision(self) -> list[Failure]:
        """Jobs still `running` whose current attempt has exited non-zero."""
        return [_failure(r) for r in await self._rows(self._FAILURES)]

    async def failures_for(self, keys: Sequence[tuple[int, int, int]]) -> list[Failure]:
        want = set(keys)
        out = []
        for chunk in _chunks(list(keys)):
            rows = await self._rows(f"{self._FAILURES} AND j.id IN ({_marks(len(chunk))})", [k[0] for k in chunk])
            out += [f for f in map(_failure, rows) if (f.job_id, f.run_id, f.attempt_id) in want]
        return out

    async def apply_decisions(self, decisions: Sequence[tuple[Failure, RetryDecision]]) -> None:
        def _body(tx: Tx):
            known = facts(tx, [f.job_id for f, _ in decisions])
            apply(tx, (L.handle(L.Decided(tx.now, f.run_id, f.attempt_id, f.return_code, d), known[f.job_id])
                       for f, d in decisions if f.job_id in known))
        return await self.write(_body)

    async def recoveries_to_run(self, job_ids: Sequence[int] | None = None,
                                worker_id: int | None = None) -> list[Recovery]:
        """Recovery scripts to run: by the daemon (no live worker holds the job) or by `worker_id`."""
        where = f"j.status = {int(S.RECOVERING)}"
        args: list = []
        if worker_id is not None:
            # Unfinished ones again too: the reply that handed them out may have been lost.
            where += " AND j.worker_id = ? AND coalesce(a.recovery_outcome, 'running') = 'running'"
            args.append(worker_id)
        else:
            where += (" AND (j.worker_id IS NULL OR NOT EXISTS (SELECT 1 FROM workers wk"
                      " WHERE wk.id = j.worker_id AND wk.state = 'active'))")
        if job_ids is not None:
            if not job_ids:
                return []
            where += f" AND j.id IN ({_marks(len(job_ids))})"
            args += list(job_ids)
        rows = await self._rows(
            f"""SELECT j.id, j.workflow_id, j.name, j.run_id, j.attempt_id, j.env, a.return_code, a.rule_index,
                   h.rules, w.cwd, w.output_dir FROM jobs j
                JOIN attempts a ON a.job_id = j.id AND a.run_id = j.run_id AND a.attempt_id = j.attempt_id
                JOIN workflows w ON w.id = j.workflow_id
                JOIN failure_handlers h ON h.id = j.handler_id WHERE {where}""", args)
        out = []
        for r in rows:
            rule = msgspec.json.decode(r["rules"], type=list[Rule])[r["rule_index"]]
            out.append(Recovery(r["id"], r["workflow_id"], r["name"], r["run_id"], r["attempt_id"],
                                r["return_code"], rule.recovery_script or "", rule.recovery_timeout,
                                env_of(r["env"]), r["cwd"], r["output_dir"]))
        return out

    async def worker_recoveries(self, worker_id: int) -> list:
        """Recovery scripts this worker should run, until it reports them (it skips repeats)."""
        recs = await self.recoveries_to_run(worker_id=worker_id)
        if recs:
            def _body(tx: Tx):
                tx.many("UPDATE attempts SET recovery_outcome = 'running' WHERE job_id = ? AND run_id = ? "
                              "AND attempt_id = ?", ((r.job_id, r.run_id, r.attempt_id) for r in recs))
            await self.write(_body)
        return recs

    async def finish_recovery(self, report: RecoveryReport, worker_id: int | None = None) -> None:
        """Record a recovery script's result; from a worker, only for a script handed to it."""
        def _body(tx: Tx):
            job = facts(tx, [report.job_id]).get(report.job_id)
            if job is None:
                return
            if worker_id is not None and (job.worker_id != worker_id or (tx.one(
                    "SELECT recovery_outcome FROM attempts WHERE job_id = ? AND run_id = ? AND attempt_id = ?",
                    (job.id, report.run_id, report.attempt_id)) or [None])[0] != "running"):
                return
            apply(tx, [L.handle(L.RecoveryDone(tx.now, report.run_id, report.attempt_id, report.ok,
                                               report.return_code, report.message, report.seconds), job)])
        return await self.write(_body)

    async def classify(self, decisions: Sequence[tuple[int, str, str]], source: str,
                       workflow_id: int | None = None, key: RequestKey | None = None) -> list[int]:
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
        return await self.write(_body, key=key)

    async def running_attempts(self) -> list[Runnable]:
        """Local attempts that started and never recorded an exit (after a crash: to adopt)."""
        rows = await self._rows(
            f"""SELECT a.start_time AS attempt_start, a.gpus AS attempt_gpus, {RUNNABLE_COLUMNS}
                JOIN attempts a ON a.job_id = j.id
                AND a.run_id = j.run_id AND a.attempt_id = j.attempt_id
                WHERE a.end_time IS NULL AND a.worker_id IS NULL""")
        return [runnable(r, r["attempt_start"], r["attempt_gpus"]) for r in rows]



def _insert_files(tx: Tx, wf: int, spec: Workflow, ids: dict[str, int]) -> None:
    writer = {out: ids[j.name] for j in spec.jobs for out in j.outputs}
    tx.many("INSERT INTO files (workflow_id, name, path, producer) VALUES (?, ?, ?, ?)",
            ((wf, f.name, f.path, writer.get(f.name)) for f in spec.files.values()))
    file_ids = {name: fid for fid, name in tx.rows("SELECT id, name FROM files WHERE workflow_id = ?", (wf,))}
    tx.many("INSERT INTO file_readers (file_id, job_id) VALUES (?, ?)",
            ((file_ids[i], ids[j.name]) for j in spec.jobs for i in j.inputs))


def _started(st: Start, host: str) -> L.Started:
    j = st.job
    return L.Started(st.time, j.run_id, j.attempt_id, host, st.pid, j.stdout_path, j.stderr_path,
                     ",".join(j.gpus) if j.gpus else None, j.runtime, j.memory)


def _failure(r: sqlite3.Row) -> Failure:
    rules = msgspec.json.decode(r["rules"], type=list[Rule]) if r["rules"] else None
    upf = r["use_pending_failed"]
    return Failure(r["id"], r["workflow_id"], r["run_id"], r["attempt_id"], r["return_code"], rules,
                   None if upf is None else bool(upf), r["cause"])


def _attempt_info(r: sqlite3.Row, job_name: str | None = None) -> AttemptInfo:
    return AttemptInfo(job_id=r["job_id"], run_id=r["run_id"], attempt_id=r["attempt_id"], start_time=r["start_time"],
                       end_time=r["end_time"], pid=r["pid"], host=r["host"], return_code=r["return_code"],
                       rule_index=r["rule_index"], action=r["action"], recovery_outcome=r["recovery_outcome"],
                       message=r["message"], cause=r["cause"], gpus=r["gpus"], runtime_limit=r["runtime_limit"],
                       memory_limit=r["memory_limit"], peak_memory=r["peak_rss_bytes"], cpu_seconds=r["cpu_seconds"],
                       stdout_path=r["stdout_path"], stderr_path=r["stderr_path"], job_name=job_name)


def _outcome(counts: dict[str, int]) -> str:
    if counts.get("pending_failed"):
        return "pending_failed"
    if set(counts) <= {"completed"}:
        return "completed"
    return "failed"


def _summary(r: sqlite3.Row, counts: dict[str, int]) -> WorkflowSummary:
    about = msgspec.json.decode(r["about"]) if r["about"] else {}
    return WorkflowSummary(id=r["id"], name=r["name"], state=r["state"], run_id=r["run_id"],
                           created=r["created"], cwd=r["cwd"], output_dir=r["output_dir"],
                           description=r["description"], counts=counts, executor=r["executor"],
                           user=about.get("user"), project=about.get("project"), metadata=about.get("metadata"))


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _job_info(r: sqlite3.Row) -> JobInfo:
    return JobInfo(id=r["id"], workflow_id=r["workflow_id"], name=r["name"], command=r["command"],
                   status=S(r["status"]).label, attempt_id=r["attempt_id"], run_id=r["run_id"],
                   num_cpus=r["num_cpus"], failure_handler=r["handler"], reason=r["reason"],
                   return_code=r["rc"], stderr_path=r["stderr_path"], num_gpus=r["num_gpus"],
                   memory_bytes=r["memory_bytes"], runtime_seconds=r["runtime_seconds"])
