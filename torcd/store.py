"""The SQLite store: the daemon's only writer and the source of truth.

Every state change and the event rows that describe it commit in one
transaction; `on_commit` (the event bus) hears of them only afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiosqlite
import msgspec

from torcd.core.retry import Action, RetryDecision, Rule
from torcd.core.status import ACTIVE, FAILED_LIKE, FINAL, JobStatus, check_transition
from torcd.errors import InvalidParams, InvalidTransition, NotFound, TorcError
from torcd.migrations import MIGRATIONS
from torcd.protocol import AttemptInfo, Event, JobInfo, Recovery, RecoveryReport, Runnable, WorkflowSummary
from torcd.spec import SlurmSchedulerSpec, Workflow
from torcd.store_slurm import SlurmStore

S = JobStatus
_ACTIVE_SQL = ",".join(str(int(s)) for s in ACTIVE)
_CHUNK = 500
_encode = msgspec.json.Encoder().encode
_event_decoder = msgspec.json.Decoder(Event)


def _chunks(items: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


_COUNTS = "SELECT status, count(*) FROM jobs WHERE workflow_id = ? GROUP BY status"
_JOB_INFO = """SELECT j.*, h.name AS handler,
                   (SELECT return_code FROM attempts a WHERE a.job_id = j.id
                    ORDER BY a.run_id DESC, a.attempt_id DESC LIMIT 1) AS rc,
                   (SELECT stderr_path FROM attempts a WHERE a.job_id = j.id
                    ORDER BY a.run_id DESC, a.attempt_id DESC LIMIT 1) AS stderr_path
               FROM jobs j LEFT JOIN failure_handlers h ON h.id = j.handler_id"""
# What it takes to start a job: select these, then `runnables_fitting` or `_runnable`.
_RUNNABLE_COLUMNS = """j.id, j.workflow_id, j.name, j.command, j.run_id, j.attempt_id, j.num_cpus, j.env,
                       w.cwd, w.output_dir FROM jobs j JOIN workflows w ON w.id = j.workflow_id"""


RECOVERY_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)  # seconds
_METRIC_QUERIES = {
    "jobs": "SELECT workflow_id, status, count(*) FROM jobs GROUP BY workflow_id, status",
    "attempts": "SELECT workflow_id, count(*) FROM attempts GROUP BY workflow_id",
    "decisions": """SELECT a.workflow_id, coalesce(h.name, ''), coalesce(a.rule_index, -1), a.return_code,
                           a.action, count(*) FROM attempts a JOIN jobs j ON j.id = a.job_id
                    LEFT JOIN failure_handlers h ON h.id = j.handler_id WHERE a.action IS NOT NULL
                    GROUP BY 1, 2, 3, 4, 5""",
    "recoveries": f"""SELECT workflow_id, count(*), coalesce(sum(recovery_seconds), 0),
                          {", ".join(f"sum(recovery_seconds <= {b})" for b in RECOVERY_BUCKETS)}
                      FROM attempts WHERE recovery_seconds IS NOT NULL GROUP BY workflow_id""",
    "allocations": "SELECT workflow_id, state, count(*) FROM allocations GROUP BY workflow_id, state",
}


def _labelled(rows: Iterable[Sequence]) -> dict[str, int]:
    return {S(status).label: n for status, n in rows}


class StoreError(TorcError):
    code = -32030


class Exit(msgspec.Struct, frozen=True):
    job_id: int
    run_id: int
    attempt_id: int
    return_code: int
    end_time: float
    message: str | None = None
    workflow_id: int = 0


class Start(msgspec.Struct, frozen=True):
    """A claimed job whose process the executor started (pid None: it could not start)."""

    job: Runnable
    pid: int | None
    time: float


class Failure(msgspec.Struct, frozen=True):
    """A recorded non-zero exit still waiting for its failure-handler decision."""

    job_id: int
    workflow_id: int
    run_id: int
    attempt_id: int
    return_code: int
    rules: list[Rule] | None
    use_pending_failed: bool | None


def stdio_paths(output_dir: str, prefix: str, wf: int, job: int, run: int, attempt: int) -> tuple[str, str]:
    base = os.path.join(output_dir, "job_stdio", f"{prefix}_wf{wf}_j{job}_r{run}_a{attempt}")
    return base + ".o", base + ".e"


class Tx:
    """One open write transaction, run in the writer thread; collects the events it commits."""

    def __init__(self, db: sqlite3.Connection, now: float):
        self.db, self.now = db, now
        self.events: list[Event] = []
        self.touched: set[int] = set()
        self.last_seq: int | None = None

    def rows(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, args).fetchall()

    def one(self, sql: str, args: Sequence = ()) -> sqlite3.Row | None:
        return self.db.execute(sql, args).fetchone()

    def run(self, sql: str, args: Sequence = ()) -> int:
        return self.db.execute(sql, args).lastrowid

    def many(self, sql: str, args: Iterable[Sequence]) -> None:
        self.db.executemany(sql, args)

    def emit(self, kind: str, workflow_id: int, **fields: Any) -> None:
        self.touched.add(workflow_id)
        self.events.append(Event(kind=kind, workflow_id=workflow_id, time=self.now, **fields))


class Store(SlurmStore):
    """Writes run as whole transactions in one writer thread (one hop per transaction, so many
    state changes share a commit); reads go through aiosqlite on a second, read-only connection."""

    def __init__(self, path: str, writer: sqlite3.Connection, reader: aiosqlite.Connection,
                 executor: ThreadPoolExecutor):
        self.path = path
        self._db = writer
        self._reader = reader
        self._executor = executor
        self._lock = asyncio.Lock()
        self._seq: int | None = None
        self.on_commit: Callable[[list[Event]], Awaitable[None] | None] | None = None

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def open(cls, path: str) -> "Store":
        executor = ThreadPoolExecutor(1, thread_name_prefix="torcd-db-writer")
        loop = asyncio.get_running_loop()
        try:
            writer = await loop.run_in_executor(executor, _open_writer, path)
            reader = await aiosqlite.connect(path, isolation_level=None, timeout=2.0)
            reader.row_factory = sqlite3.Row
            await reader.execute("PRAGMA query_only=1")
        except sqlite3.DatabaseError as e:
            executor.shutdown(wait=False)
            if "locked" in str(e):
                raise StoreError(f"the database {path} is locked by another process; stop whatever holds "
                                 "it open in a transaction and start torcd again") from None
            raise StoreError(f"cannot open the database {path}: {e}") from None
        return cls(path, writer, reader, executor)

    async def close(self) -> None:
        async with self._lock:
            await self._reader.close()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, _close_writer, self._db)
            self._executor.shutdown(wait=True)

    async def write(self, body: Callable[[Tx], Any], now: float | None = None, key: str | None = None) -> Any:
        """Run `body` as one transaction in the writer thread; then publish its events.

        With a request's idempotency `key`, the body's result is stored in the same transaction,
        and a repeat of the request gets that result without running the body again."""
        if key is not None:
            body = _once(body, key)
        async with self._lock:
            tx = Tx(self._db, time.time() if now is None else now)
            result = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, body, tx)
        if tx.events and self.on_commit is not None:
            published = self.on_commit(tx.events)
            if published is not None:
                await published
        return result

    def _run(self, body: Callable[[Tx], Any], tx: Tx) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = body(tx)
            self._settle(tx)
            self._write_events(tx)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if tx.last_seq is not None:
            self._seq = tx.last_seq
        return result

    def _write_events(self, tx: Tx) -> None:
        if not tx.events:
            return
        if self._seq is None:  # read once: this connection is the only writer
            row = tx.one("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            self._seq = row[0] if row else 0
        seq = self._seq
        for event in tx.events:
            seq += 1
            event.seq = seq
        tx.many("INSERT INTO events (seq, workflow_id, body) VALUES (?, ?, ?)",
                      [(e.seq, e.workflow_id, _encode(e)) for e in tx.events])
        tx.last_seq = seq

    def _settle(self, tx: Tx) -> None:
        """Mark touched workflows done when nothing more can run, active again otherwise."""
        for wf in sorted(tx.touched):
            row = tx.one("SELECT state FROM workflows WHERE id = ?", (wf,))
            if row is None or row[0] == "canceled":
                continue
            busy = (tx.one(
                f"SELECT EXISTS (SELECT 1 FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL}))",
                (wf,)))[0]
            if busy:
                if row[0] != "active":
                    tx.run("UPDATE workflows SET state = 'active' WHERE id = ?", (wf,))
                continue
            counts = _labelled(tx.rows(_COUNTS, (wf,)))
            state = "awaiting_classification" if counts.get("pending_failed") else "done"
            if state != row[0]:
                tx.run("UPDATE workflows SET state = ? WHERE id = ?", (state, wf))
                summary = ", ".join(f"{n} {k}" for k, n in counts.items())
                tx.events.append(Event(kind=f"workflow_{state}", workflow_id=wf, time=tx.now,
                                       message=summary, status=_outcome(counts)))

    # -- reads -------------------------------------------------------------

    async def _rows(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        return list(await self._reader.execute_fetchall(sql, args))

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
        return [AttemptInfo(job_id=r["job_id"], run_id=r["run_id"], attempt_id=r["attempt_id"],
                            start_time=r["start_time"], end_time=r["end_time"], pid=r["pid"],
                            host=r["host"], return_code=r["return_code"], rule_index=r["rule_index"],
                            action=r["action"], recovery_outcome=r["recovery_outcome"],
                            message=r["message"], stdout_path=r["stdout_path"],
                            stderr_path=r["stderr_path"]) for r in rows]

    async def events(self, wf: int, after: int = 0, limit: int = 10_000) -> list[Event]:
        await self.workflow(wf)
        rows = await self._rows(
            "SELECT body FROM events WHERE workflow_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (wf, after, limit))
        return [_event_decoder.decode(r[0]) for r in rows]

    # -- writes: workflows -------------------------------------------------

    async def create_workflow(self, spec: Workflow, cwd: str, spec_path: str, executor: str = "local",
                              account: str | None = None, key: str | None = None) -> int:
        output_dir = os.path.normpath(os.path.join(cwd, spec.output_dir))
        upf = None if spec.use_pending_failed is None else int(spec.use_pending_failed)
        schedulers = list(spec.schedulers)
        jobs = spec.jobs
        if executor == "slurm":
            if not schedulers:
                schedulers = [SlurmSchedulerSpec(name="default", account=account)]
            default = schedulers[0].name if len(schedulers) == 1 else None
            for j in jobs:
                if j.scheduler is None and default is None:
                    raise InvalidParams(f"job {j.name!r} has no scheduler and the spec has several "
                                        f"slurm_schedulers but no default_scheduler", {"field": "$.jobs"})
            jobs = [j if j.scheduler else msgspec.structs.replace(j, scheduler=default) for j in jobs]
        def _body(tx: Tx):
            wf = tx.run(
                """INSERT INTO workflows (name, description, cwd, spec_path, output_dir,
                   use_pending_failed, created, executor, account) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (spec.name, spec.description, cwd, spec_path, output_dir, upf, tx.now, executor, account))
            handler_ids = {}
            for name, rules in spec.failure_handlers.items():
                handler_ids[name] = tx.run(
                    "INSERT INTO failure_handlers (workflow_id, name, rules) VALUES (?, ?, ?)",
                    (wf, name, _encode(rules)))
            tx.many("INSERT INTO schedulers (workflow_id, name, spec) VALUES (?, ?, ?)",
                          ((wf, sc.name, _encode(sc)) for sc in schedulers))
            tx.many(
                """INSERT INTO jobs (workflow_id, name, command, status, num_cpus, env, handler_id,
                   pending_deps, updated, scheduler) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                ((wf, j.name, j.command, int(S.BLOCKED if j.depends_on else S.READY), j.num_cpus,
                  _encode(j.env) if j.env else None, handler_ids.get(j.failure_handler),
                  len(j.depends_on), tx.now, j.scheduler) for j in jobs))
            ids = {name: jid for jid, name in tx.rows(
                "SELECT id, name FROM jobs WHERE workflow_id = ?", (wf,))}
            tx.many("INSERT INTO deps (job_id, depends_on) VALUES (?, ?)",
                          ((ids[j.name], ids[d]) for j in jobs for d in j.depends_on))
            tx.emit("workflow_created", wf, count=len(jobs), message=spec.name)
            return wf
        return await self.write(_body, key=key)

    async def cancel_workflow(self, wf: int) -> list[int]:
        """Cancel every unfinished job; return the ids of jobs that had a process running."""
        def _body(tx: Tx):
            self._require_workflow(tx, wf)
            rows = tx.rows(
                f"SELECT id, status FROM jobs WHERE workflow_id = ? AND status NOT IN "
                f"({','.join(str(int(s)) for s in FINAL)})", (wf,))
            for jid, status in rows:
                check_transition(S(status), S.CANCELED, jid)
            tx.run(
                f"UPDATE jobs SET status = {int(S.CANCELED)}, reason = 'workflow canceled', updated = ? "
                f"WHERE workflow_id = ? AND status NOT IN ({','.join(str(int(s)) for s in FINAL)})",
                (tx.now, wf))
            tx.run("UPDATE workflows SET state = 'canceled' WHERE id = ?", (wf,))
            tx.emit("workflow_canceled", wf, count=len(rows))
            return [jid for jid, status in rows if status in (S.RUNNING, S.RECOVERING, S.PENDING)]
        return await self.write(_body)

    async def delete_workflow(self, wf: int, key: str | None = None) -> None:
        def _body(tx: Tx):
            self._require_workflow(tx, wf)
            busy = tx.one(
                f"SELECT count(*) FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL})", (wf,))
            if busy[0]:
                raise InvalidTransition(f"workflow {wf} has {busy[0]} unfinished jobs; cancel it first")
            tx.run("DELETE FROM deps WHERE job_id IN (SELECT id FROM jobs WHERE workflow_id = ?)", (wf,))
            for table in ("attempts", "jobs", "failure_handlers", "events", "schedulers", "allocations", "workers"):
                tx.run(f"DELETE FROM {table} WHERE workflow_id = ?", (wf,))
            tx.run("DELETE FROM workflows WHERE id = ?", (wf,))
        return await self.write(_body, key=key)

    async def reset_status(self, wf: int, failed_only: bool, key: str | None = None) -> int:
        """Put failed (or all) jobs and what they block back to run in a new run."""
        def _body(tx: Tx):
            row = self._require_workflow(tx, wf)
            if failed_only:
                seeds = [r[0] for r in tx.rows(
                    f"SELECT id FROM jobs WHERE workflow_id = ? AND status IN "
                    f"({','.join(str(int(s)) for s in FAILED_LIKE)})", (wf,))]
                targets = sorted(set(seeds) | set(self._downstream(tx, seeds)))
            else:
                busy = tx.one(
                    f"SELECT count(*) FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL})", (wf,))
                if busy[0]:
                    raise InvalidTransition(
                        f"workflow {wf} has {busy[0]} unfinished jobs; cancel it or wait before a full reset")
                targets = [r[0] for r in tx.rows("SELECT id FROM jobs WHERE workflow_id = ?", (wf,))]
            statuses = self._statuses(tx, targets)
            targets = [j for j in targets if statuses[j] not in ACTIVE]
            if not targets:
                return 0
            run_id = row["run_id"] + 1
            tx.run("UPDATE workflows SET run_id = ?, state = 'active' WHERE id = ?", (run_id, wf))
            for chunk in _chunks(targets):
                tx.run(
                    f"""UPDATE jobs SET status = {int(S.UNINITIALIZED)}, attempt_id = 1, run_id = ?,
                        reason = NULL, updated = ? WHERE id IN ({_marks(len(chunk))})""",
                    (run_id, tx.now, *chunk))
            for chunk in _chunks(targets):
                tx.run(
                    f"""UPDATE jobs SET pending_deps = (SELECT count(*) FROM deps d JOIN jobs p
                        ON p.id = d.depends_on WHERE d.job_id = jobs.id AND p.status != {int(S.COMPLETED)})
                        WHERE id IN ({_marks(len(chunk))})""", chunk)
                tx.run(
                    f"""UPDATE jobs SET status = CASE WHEN pending_deps = 0 THEN {int(S.READY)}
                        ELSE {int(S.BLOCKED)} END WHERE id IN ({_marks(len(chunk))})""", chunk)
            tx.emit("workflow_reset", wf, run_id=run_id, count=len(targets),
                    message="failed jobs" if failed_only else "all jobs")
            return len(targets)
        return await self.write(_body, key=key)

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
            claimed = self._claim(tx, prefetch, None, S.PENDING) if prefetch > 0 else []
            return claimed, stale
        return await self.write(_body)

    def _claim(self, tx: Tx, limit: int, cpus: int | None, status: JobStatus = S.RUNNING) -> list[Runnable]:
        """Take ready local jobs (those fitting `cpus`, when given) and mark them `status`."""
        rows = tx.rows(
            f"""SELECT {_RUNNABLE_COLUMNS} WHERE j.status = {int(S.READY)} AND w.executor = 'local'
                ORDER BY j.id LIMIT ?""", (limit,))
        claimed = runnables_fitting(rows, cpus)
        tx.many(f"UPDATE jobs SET status = {int(status)}, updated = ? WHERE id = ?",
                ((tx.now, j.job_id) for j in claimed))
        return claimed

    def _start(self, tx: Tx, starts: Sequence[Start], host: str) -> list[int]:
        """Open the attempts of jobs whose processes started; return jobs no longer claimed."""
        stale = []
        for st in starts:
            j = st.job
            cur = tx.db.execute(
                f"""UPDATE jobs SET status = {int(S.RUNNING)}, updated = ? WHERE id = ? AND run_id = ?
                    AND attempt_id = ? AND status IN ({int(S.PENDING)}, {int(S.RUNNING)})""",
                (tx.now, j.job_id, j.run_id, j.attempt_id))
            if cur.rowcount == 0:
                stale.append(j.job_id)  # canceled while it was being started
                continue
            tx.run("""INSERT INTO attempts (job_id, workflow_id, run_id, attempt_id, host, pid, start_time,
                      stdout_path, stderr_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                   (j.job_id, j.workflow_id, j.run_id, j.attempt_id, host, st.pid, st.time, j.stdout_path,
                    j.stderr_path))
            tx.emit("job_started", j.workflow_id, job_id=j.job_id, job_name=j.name, run_id=j.run_id,
                    attempt_id=j.attempt_id)
        return stale

    async def adopt_pending(self, started: dict[int, int | None], host: str) -> int:
        """After a restart: jobs claimed (`pending`) whose process had started become running attempts
        (with its pid, when still alive); the rest go back to `ready`."""
        def _body(tx: Tx):
            rows = tx.rows(f"SELECT {_RUNNABLE_COLUMNS} WHERE j.status = {int(S.PENDING)} AND w.executor = 'local'")
            for r in rows:
                if r["id"] in started:
                    tx.db.execute(f"UPDATE jobs SET status = {int(S.RUNNING)} WHERE id = ?", (r["id"],))
                    self._start(tx, [Start(_runnable(r), started[r["id"]], tx.now)], host)
                else:
                    tx.db.execute(f"UPDATE jobs SET status = {int(S.READY)} WHERE id = ?", (r["id"],))
                    tx.touched.add(r["workflow_id"])
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
        tx.many(
            """UPDATE attempts SET end_time = ?, return_code = ?, message = coalesce(?, message)
               WHERE job_id = ? AND run_id = ? AND attempt_id = ? AND end_time IS NULL""",
            ((e.end_time, e.return_code, e.message, e.job_id, e.run_id, e.attempt_id) for e in exits))
        jobs = self._job_rows(tx, [e.job_id for e in exits])
        done = []
        for e in exits:
            j = jobs.get(e.job_id)
            if j is None or j["status"] != S.RUNNING or (j["run_id"], j["attempt_id"]) != (e.run_id, e.attempt_id):
                continue  # canceled meanwhile, or a stale report
            common = dict(job_id=e.job_id, job_name=j["name"], run_id=e.run_id,
                          attempt_id=e.attempt_id, return_code=e.return_code)
            if e.return_code == 0:
                done.append(e.job_id)
                tx.emit("job_completed", j["workflow_id"], status="completed", **common)
            else:
                tx.emit("job_exited", j["workflow_id"], message=e.message, **common)
        if done:
            tx.many(f"UPDATE jobs SET status = {int(S.COMPLETED)}, updated = ? WHERE id = ?",
                          ((tx.now, jid) for jid in done))
            self._release(tx, done)

    async def terminate(self, exits: Sequence[Exit]) -> None:
        """Record attempts stopped at shutdown; their jobs become `terminated`."""
        if not exits:
            return
        def _body(tx: Tx):
            tx.many(
                """UPDATE attempts SET end_time = ?, return_code = ?, message = ?
                   WHERE job_id = ? AND run_id = ? AND attempt_id = ? AND end_time IS NULL""",
                ((e.end_time, e.return_code, e.message, e.job_id, e.run_id, e.attempt_id) for e in exits))
            jobs = self._job_rows(tx, [e.job_id for e in exits])
            for e in exits:
                j = jobs.get(e.job_id)
                if j is None or j["status"] != S.RUNNING:
                    continue
                check_transition(S.RUNNING, S.TERMINATED, e.job_id)
                tx.run(f"UPDATE jobs SET status = {int(S.TERMINATED)}, reason = ?, updated = ? WHERE id = ?",
                             (e.message, tx.now, e.job_id))
                tx.emit("job_terminated", j["workflow_id"], job_id=e.job_id, job_name=j["name"], run_id=e.run_id,
                        attempt_id=e.attempt_id, return_code=e.return_code, status="terminated",
                        message=e.message)
        return await self.write(_body)

    _FAILURES = f"""SELECT j.id, j.workflow_id, j.run_id, j.attempt_id, a.return_code, h.rules,
                       w.use_pending_failed FROM jobs j
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
            jobs = self._job_rows(tx, [f.job_id for f, _ in decisions])
            failed = []
            for f, d in decisions:
                j = jobs.get(f.job_id)
                if j is None or j["status"] != S.RUNNING or (j["run_id"], j["attempt_id"]) != (f.run_id, f.attempt_id):
                    continue
                new = {Action.RETRY: S.READY, Action.RECOVER: S.RECOVERING, Action.FAIL: S.FAILED,
                       Action.PARK: S.PENDING_FAILED}[d.action]
                check_transition(S.RUNNING, new, f.job_id)
                next_attempt = f.attempt_id + 1 if d.action == Action.RETRY else f.attempt_id
                tx.run("UPDATE jobs SET status = ?, attempt_id = ?, reason = ?, updated = ? WHERE id = ?",
                             (int(new), next_attempt, d.reason, tx.now, f.job_id))
                tx.run(
                    """UPDATE attempts SET rule_index = ?, action = ? WHERE job_id = ? AND run_id = ?
                       AND attempt_id = ?""", (d.rule_index, d.action.value, f.job_id, f.run_id, f.attempt_id))
                tx.emit("retry_decided", f.workflow_id, job_id=f.job_id, job_name=j["name"], run_id=f.run_id,
                        attempt_id=f.attempt_id, return_code=f.return_code, rule_index=d.rule_index,
                        action=d.action.value, status=new.label, message=d.reason)
                if new == S.FAILED:
                    failed.append((f.workflow_id, f.job_id, j["name"]))
            for wf, jid, name in failed:
                self._cascade(tx, wf, jid, name)
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
                                _env(r["env"]), r["cwd"], r["output_dir"]))
        return out

    async def finish_recovery(self, report: RecoveryReport, worker_id: int | None = None) -> None:
        """Record a recovery script's result; from a worker, only for a script handed to it."""
        job_id, run_id, attempt_id, ok = report.job_id, report.run_id, report.attempt_id, report.ok
        return_code, message = report.return_code, report.message
        def _body(tx: Tx):
            j = (self._job_rows(tx, [job_id])).get(job_id)
            if j is None or j["status"] != S.RECOVERING or (j["run_id"], j["attempt_id"]) != (run_id, attempt_id):
                return
            if worker_id is not None and (j["worker_id"] != worker_id or tx.one(
                    "SELECT recovery_outcome FROM attempts WHERE job_id = ? AND run_id = ? AND attempt_id = ?",
                    (job_id, run_id, attempt_id))[0] != "running"):
                return
            tx.run(
                """UPDATE attempts SET recovery_rc = ?, recovery_outcome = ?, recovery_seconds = ?
                   WHERE job_id = ? AND run_id = ? AND attempt_id = ?""",
                (return_code, "succeeded" if ok else "failed", report.seconds, job_id, run_id, attempt_id))
            new = S.READY if ok else S.FAILED
            check_transition(S.RECOVERING, new, job_id)
            tx.run("UPDATE jobs SET status = ?, attempt_id = ?, reason = ?, updated = ? WHERE id = ?",
                         (int(new), attempt_id + 1 if ok else attempt_id, message, tx.now, job_id))
            tx.emit("recovery_finished", j["workflow_id"], job_id=job_id, job_name=j["name"], run_id=run_id,
                    attempt_id=attempt_id, return_code=return_code, action="retry" if ok else "fail",
                    status=new.label, message=message)
            if not ok:
                self._cascade(tx, j["workflow_id"], job_id, j["name"])
        return await self.write(_body)

    async def classify(self, decisions: Sequence[tuple[int, str, str]], source: str,
                       workflow_id: int | None = None, key: str | None = None) -> list[int]:
        """Resolve pending_failed jobs, each (job_id, action, reason), all or none: `retry`
        (ready, attempt +1) or `fail` (cascade). With `workflow_id`, every job must be in it."""
        job_ids = [d[0] for d in decisions]
        def _body(tx: Tx):
            jobs = self._job_rows(tx, job_ids)
            for jid in job_ids:
                if jid not in jobs or (workflow_id is not None and jobs[jid]["workflow_id"] != workflow_id):
                    raise NotFound(f"no job {jid}" + (f" in workflow {workflow_id}" if workflow_id else ""))
                if jobs[jid]["status"] != S.PENDING_FAILED:
                    raise InvalidTransition(
                        f"job {jid} is {S(jobs[jid]['status']).label}, not pending_failed")
            if len(set(job_ids)) != len(job_ids):
                raise InvalidParams("a job is classified twice", {"field": "$.classifications"})
            for jid, action, reason in decisions:
                new = S.READY if action == "retry" else S.FAILED
                j = jobs[jid]
                attempt = j["attempt_id"] + 1 if new == S.READY else j["attempt_id"]
                tx.run("UPDATE jobs SET status = ?, attempt_id = ?, reason = ?, updated = ? WHERE id = ?",
                             (int(new), attempt, reason or f"classified {action} ({source})", tx.now, jid))
                tx.emit("job_classified", j["workflow_id"], job_id=jid, job_name=j["name"], run_id=j["run_id"],
                        attempt_id=j["attempt_id"], action=action, status=new.label, message=reason,
                        source=source)
                if new == S.FAILED:
                    self._cascade(tx, j["workflow_id"], jid, j["name"])
            return job_ids
        return await self.write(_body, key=key)

    async def running_attempts(self) -> list[Runnable]:
        """Local attempts that started and never recorded an exit (after a crash: to adopt)."""
        rows = await self._rows(
            f"""SELECT {_RUNNABLE_COLUMNS} JOIN attempts a ON a.job_id = j.id AND a.run_id = j.run_id
                AND a.attempt_id = j.attempt_id WHERE a.end_time IS NULL AND a.worker_id IS NULL""")
        return [_runnable(r) for r in rows]

    # -- helpers -----------------------------------------------------------

    def _require_workflow(self, tx: Tx, wf: int) -> sqlite3.Row:
        row = tx.one("SELECT * FROM workflows WHERE id = ?", (wf,))
        if row is None:
            raise NotFound(f"no workflow {wf}")
        tx.touched.add(wf)
        return row

    def _job_rows(self, tx: Tx, ids: Sequence[int]) -> dict[int, sqlite3.Row]:
        out = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            for r in tx.rows(
                    f"SELECT id, workflow_id, name, status, run_id, attempt_id, worker_id FROM jobs WHERE id IN "
                    f"({_marks(len(chunk))})", chunk):
                out[r["id"]] = r
        return out

    def _statuses(self, tx: Tx, ids: Sequence[int]) -> dict[int, int]:
        return {jid: r["status"] for jid, r in (self._job_rows(tx, ids)).items()}

    def _release(self, tx: Tx, completed: Sequence[int]) -> None:
        """Count down dependents of completed jobs; those with nothing left become ready."""
        counts: collections.Counter[int] = collections.Counter()
        for chunk in _chunks(list(completed)):
            for (jid,) in tx.rows(
                    f"SELECT job_id FROM deps WHERE depends_on IN ({_marks(len(chunk))})", chunk):
                counts[jid] += 1
        if not counts:
            return
        tx.many("UPDATE jobs SET pending_deps = pending_deps - ? WHERE id = ?",
                      ((n, jid) for jid, n in counts.items()))
        ready = []
        for chunk in _chunks(list(counts)):
            ready += tx.rows(
                f"""SELECT id, workflow_id, name FROM jobs WHERE id IN ({_marks(len(chunk))})
                    AND status = {int(S.BLOCKED)} AND pending_deps <= 0""", chunk)
        tx.many(f"UPDATE jobs SET status = {int(S.READY)}, updated = ? WHERE id = ?",
                      ((tx.now, r["id"]) for r in ready))
        for r in ready:
            tx.emit("job_ready", r["workflow_id"], job_id=r["id"], job_name=r["name"])

    def _downstream(self, tx: Tx, ids: Sequence[int]) -> list[int]:
        out: list[int] = []
        for chunk in _chunks(list(ids)):
            out += [r[0] for r in tx.rows(
                f"""WITH RECURSIVE down(id) AS (
                        SELECT job_id FROM deps WHERE depends_on IN ({_marks(len(chunk))})
                        UNION SELECT d.job_id FROM deps d JOIN down ON d.depends_on = down.id)
                    SELECT id FROM down""", chunk)]
        return list(dict.fromkeys(out))

    def _cascade(self, tx: Tx, wf: int, job_id: int, name: str) -> None:
        """Cancel every job downstream of a failed one."""
        down = self._downstream(tx, [job_id])
        canceled = 0
        for chunk in _chunks(down):
            cur = tx.db.execute(
                f"""UPDATE jobs SET status = {int(S.CANCELED)}, reason = ?, updated = ?
                    WHERE id IN ({_marks(len(chunk))}) AND status IN ({int(S.BLOCKED)}, {int(S.UNINITIALIZED)})""",
                (f"upstream job {name} ({job_id}) failed", tx.now, *chunk))
            canceled += cur.rowcount
        tx.emit("job_failed", wf, job_id=job_id, job_name=name, status="failed", count=canceled,
                message=f"{canceled} downstream jobs canceled" if canceled else None)


REQUESTS_KEPT = 7 * 86400  # seconds a request's result answers its repeats


def _once(body: Callable[[Tx], Any], key: str) -> Callable[[Tx], Any]:
    def once(tx: Tx) -> Any:
        row = tx.one("SELECT result FROM requests WHERE key = ?", (key,))
        if row is not None:
            return msgspec.json.decode(row[0])
        result = body(tx)
        tx.run("DELETE FROM requests WHERE created < ?", (tx.now - REQUESTS_KEPT,))
        tx.run("INSERT INTO requests (key, result, created) VALUES (?, ?, ?)", (key, _encode(result), tx.now))
        return result
    return once


def _open_writer(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=2.0, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=2000")
    _migrate(db)
    db.execute("BEGIN IMMEDIATE")  # fail now, not at the first job, if another process holds the lock
    db.execute("ROLLBACK")
    return db


def _close_writer(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _migrate(db: sqlite3.Connection) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StoreError(f"the database schema is version {version}, newer than this torcd "
                         f"({len(MIGRATIONS)}); upgrade torcd")
    for n in range(version, len(MIGRATIONS)):
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _statements(MIGRATIONS[n]):
                db.execute(stmt)
            db.execute(f"PRAGMA user_version = {n + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _env(text: str | None) -> dict[str, str]:
    return msgspec.json.decode(text, type=dict[str, str]) if text else {}


def _runnable(r: sqlite3.Row) -> Runnable:
    out, err = stdio_paths(r["output_dir"], "job", r["workflow_id"], r["id"], r["run_id"], r["attempt_id"])
    return Runnable(r["id"], r["workflow_id"], r["name"], r["command"], r["run_id"], r["attempt_id"],
                    r["num_cpus"], _env(r["env"]), r["cwd"], r["output_dir"], out, err)


def runnables_fitting(rows: Iterable[sqlite3.Row], cpus: int | None) -> list[Runnable]:
    """Jobs from `_RUNNABLE_COLUMNS` rows, in order, skipping those that no longer fit `cpus` (None: all)."""
    out, free = [], cpus
    for r in rows:
        if free is not None:
            if r["num_cpus"] > free:
                continue
            free -= r["num_cpus"]
        out.append(_runnable(r))
    return out


def _failure(r: sqlite3.Row) -> Failure:
    rules = msgspec.json.decode(r["rules"], type=list[Rule]) if r["rules"] else None
    upf = r["use_pending_failed"]
    return Failure(r["id"], r["workflow_id"], r["run_id"], r["attempt_id"], r["return_code"], rules,
                   None if upf is None else bool(upf))


def _outcome(counts: dict[str, int]) -> str:
    if counts.get("pending_failed"):
        return "pending_failed"
    if set(counts) <= {"completed"}:
        return "completed"
    return "failed"


def _summary(r: sqlite3.Row, counts: dict[str, int]) -> WorkflowSummary:
    return WorkflowSummary(id=r["id"], name=r["name"], state=r["state"], run_id=r["run_id"],
                           created=r["created"], cwd=r["cwd"], output_dir=r["output_dir"],
                           description=r["description"], counts=counts)


def _job_info(r: sqlite3.Row) -> JobInfo:
    return JobInfo(id=r["id"], workflow_id=r["workflow_id"], name=r["name"], command=r["command"],
                   status=S(r["status"]).label, attempt_id=r["attempt_id"], run_id=r["run_id"],
                   num_cpus=r["num_cpus"], failure_handler=r["handler"], reason=r["reason"],
                   return_code=r["rc"], stderr_path=r["stderr_path"])
