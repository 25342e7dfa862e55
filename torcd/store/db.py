"""The database underneath the store: one writer thread running whole transactions, a read-only
connection for reads, numbered migrations, the event rows each transaction commits, and the
results of idempotent requests.

A transaction's events are published (`on_commit`) only after it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiosqlite
import msgspec
import structlog

from torcd.core.params import name_template
from torcd.credentials import RequestKey
from torcd.errors import NotFound, TorcError
from torcd.events import EventBase
from torcd.faults import crash_point
from torcd.store.migrations import MIGRATIONS

GROUP_MAX = 256  # steps in one grouped transaction: a commit's delay for the last of them stays short
CHUNK = 500  # ids per `IN (...)`: well under SQLite's limit on bound parameters
REQUESTS_KEPT = 7 * 86400  # seconds a request's result answers its repeats
encode = msgspec.json.Encoder().encode
log = structlog.get_logger("torcd.store.db")
RETRY_FIRST, RETRY_MAX = 0.05, 2.0  # seconds between tries of a write that may succeed later
# Set while serving a request: its writes fail at once rather than wait for the disk or a lock.
serving_request: contextvars.ContextVar[bool] = contextvars.ContextVar("serving_request", default=False)


class StoreError(TorcError):
    code = -32030


class StoreUnavailable(StoreError):
    """A write failed for a reason that can pass: a full disk, a lock another process holds."""

    code = -32031


def _unavailable(e: sqlite3.OperationalError, path: str) -> StoreUnavailable | None:
    text = str(e)
    if "full" in text:
        return StoreUnavailable(
            f"the disk holding the state database {path} is full ({text}); nothing was "
            "changed: free space there, and torcd records what waits as soon as it can"
        )
    if "locked" in text or "busy" in text:
        return StoreUnavailable(
            f"the state database {path} is locked by another process ({text}); nothing was "
            "changed: end that process's transaction, and torcd carries on"
        )
    if "disk I/O error" in text:
        return StoreUnavailable(f"the state database {path} could not be written ({text}); nothing was changed")
    return None


def chunks(items: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def marks(n: int) -> str:
    return ",".join("?" * n)


class Tx:
    """One open write transaction, run in the writer thread; collects the events it commits."""

    def __init__(self, db: sqlite3.Connection, now: float):
        self.db, self.now = db, now
        self.events: list[EventBase] = []
        self.touched: set[int] = set()  # workflows whose state may have changed
        self.last_seq: int | None = None

    def rows(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, args).fetchall()

    def one(self, sql: str, args: Sequence = ()) -> sqlite3.Row | None:
        return self.db.execute(sql, args).fetchone()

    def one_row(self, sql: str, args: Sequence = ()) -> sqlite3.Row:
        """The first row of a query that always yields one: an aggregate, an EXISTS, a row known to be there."""
        row = self.db.execute(sql, args).fetchone()
        assert row is not None, sql
        return row

    def run(self, sql: str, args: Sequence = ()) -> int:
        rowid = self.db.execute(sql, args).lastrowid
        assert rowid is not None  # sqlite3 sets it after every execute (None only before the first)
        return rowid

    def delete(self, sql: str, args: Sequence = ()) -> int:
        """A DELETE; how many rows it removed."""
        return self.db.execute(sql, args).rowcount

    def many(self, sql: str, args: Iterable[Sequence]) -> None:
        if isinstance(args, list | tuple) and not args:
            return  # nothing to prepare for no rows (a poll's lists often are empty)
        self.db.executemany(sql, args)  # a generator stays one: a million jobs are never held at once

    def emit(self, kind: type[EventBase], workflow_id: int, **fields: Any) -> None:
        self.publish([kind(workflow_id=workflow_id, time=self.now, **fields)])

    def publish(self, events: Iterable[EventBase]) -> None:
        for event in events:
            self.touched.add(event.workflow_id)
            self.events.append(event)


def require_workflow(tx: Tx, wf: int) -> sqlite3.Row:
    """The workflow's row (NotFound otherwise); its state is settled at the commit."""
    row = tx.one("SELECT * FROM workflows WHERE id = ?", (wf,))
    if row is None:
        raise NotFound(f"no workflow {wf}")
    tx.touched.add(wf)
    return row


class Database:
    """Writes run as whole transactions in one writer thread (one hop per transaction, so many
    state changes share a commit); reads go through aiosqlite on a second, read-only connection."""

    def __init__(
        self, path: str, writer: sqlite3.Connection, reader: aiosqlite.Connection, executor: ThreadPoolExecutor
    ):
        self.path = path
        self._db = writer
        self._reader = reader
        self._executor = executor
        self._lock = asyncio.Lock()
        self._seq: int | None = None
        self._outage: StoreUnavailable | None = None  # why the last write failed, until one succeeds
        self._outage_since = 0.0
        self.closing = False  # set at shutdown: a failing write is no longer tried again
        # Before each commit: what follows from the transaction for the workflows it touched.
        self.settle: Callable[[Tx], None] = _settle_nothing
        self.on_commit: Callable[[list[EventBase]], Awaitable[None] | None] | None = None
        self._grouped: list[tuple[Callable[[Tx], Any], asyncio.Future]] = []  # waiting for the next group
        self._grouping: asyncio.Task | None = None

    @classmethod
    async def open(cls, path: str):
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
                raise StoreError(
                    f"the database {path} is locked by another process; stop whatever holds "
                    "it open in a transaction and start torcd again"
                ) from None
            raise StoreError(f"cannot open the database {path}: {e}") from None
        return cls(path, writer, reader, executor)

    async def close(self) -> None:
        async with self._lock:
            await self._reader.close()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, _close_writer, self._db)
            self._executor.shutdown(wait=True)

    async def write(self, body: Callable[[Tx], Any], now: float | None = None, key: RequestKey | None = None) -> Any:
        """Run `body` as one transaction in the writer thread; then publish its events.

        With a request's idempotency `key`, the body's result is stored in the same transaction,
        and a repeat of the request gets that result without running the body again.

        A write that fails for a reason that can pass (a full disk, a lock held elsewhere) changes
        nothing; a request's write then fails at once (StoreUnavailable), and a service's is tried
        again, less and less often, until it succeeds: the daemon and its jobs keep running."""
        if key is not None:
            body = _once(body, key)
        fail_fast, pause = serving_request.get(), RETRY_FIRST
        while True:
            if fail_fast and self._outage is not None:
                raise self._outage  # a service is waiting for the same disk or lock
            async with self._lock:
                tx = Tx(self._db, time.time() if now is None else now)
                try:
                    result = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, body, tx)
                    break
                except sqlite3.OperationalError as e:
                    if (error := _unavailable(e, self.path)) is None:
                        raise
            if fail_fast or self.closing:
                raise error
            if self._outage is None:
                self._outage_since = time.monotonic()
                log.error("state_write_failed", error=error.message, retrying=True)
            self._outage = error
            await asyncio.sleep(pause)
            pause = min(RETRY_MAX, pause * 2)
        if self._outage is not None:
            log.warning("state_write_recovered", after_s=round(time.monotonic() - self._outage_since, 1))
            self._outage = None
        if tx.events and self.on_commit is not None:
            published = self.on_commit(tx.events)
            if published is not None:
                await published
        return result

    async def write_grouped(self, steps: Sequence[Callable[[Tx], Any]], now: float | None = None) -> list[Step]:
        """Run `steps` in one transaction, each under a SAVEPOINT of its own: a step that raises
        rolls back alone (its writes and events) and its error is returned in its place; the
        others commit together. A failure of the transaction itself (the disk, the commit) fails
        them all, as `write` does."""
        outcomes = await self.write(lambda tx: [_step(tx, body) for body in steps], now)
        crash_point("after_grouped_commit")
        return outcomes

    async def write_in_group(self, body: Callable[[Tx], Any]) -> Any:
        """Run `body` as one step of the next grouped transaction: the bodies that arrive while
        the writer is busy share one commit (and one hop to the writer thread); each raises or
        returns for its own caller, as if it had been written alone."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._grouped.append((body, future))
        if self._grouping is None or self._grouping.done():
            self._grouping = loop.create_task(self._write_groups())
        return await future

    async def _write_groups(self) -> None:
        while self._grouped:
            group, self._grouped = self._grouped[:GROUP_MAX], self._grouped[GROUP_MAX:]
            try:
                outcomes = await self.write_grouped([body for body, _ in group])
            except asyncio.CancelledError:  # shutting down: no caller is left waiting
                for _, future in [*group, *self._grouped]:
                    future.cancel()
                self._grouped = []
                raise
            except Exception as e:  # the transaction failed: every step with it
                for _, future in group:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), outcome in zip(group, outcomes):
                if future.done():  # its caller is gone
                    continue
                if outcome.error is not None:
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome.value)

    def _run(self, body: Callable[[Tx], Any], tx: Tx) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = body(tx)
            self.settle(tx)
            self._write_events(tx)
            self._db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (a full disk) may have rolled back already; the first error is the one to tell.
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
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
        tx.many(
            "INSERT INTO events (seq, workflow_id, body) VALUES (?, ?, ?)",
            [(e.seq, e.workflow_id, encode(e)) for e in tx.events],
        )
        tx.last_seq = seq

    async def rows(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        """A read on the read-only connection (what the last commit left)."""
        return list(await self._reader.execute_fetchall(sql, args))

    async def request_result(self, key: RequestKey) -> Any:
        """The stored result of a request already served under this idempotency key, or None."""
        rows = await self.rows("SELECT result, method, params_hash FROM requests WHERE key = ?", (key.key,))
        if not rows:
            return None
        key.check(rows[0][1], rows[0][2])
        return msgspec.json.decode(rows[0][0])

    async def remember(self, key: RequestKey, result: Any) -> None:
        """Store a request's result under its key, for a change made outside one transaction."""

        def _body(tx: Tx) -> None:
            _store_result(tx, key, result)

        await self.write(_body)


class Step(msgspec.Struct, frozen=True):
    """What one step of a grouped transaction did: its value, or the error that rolled it back."""

    value: Any = None
    error: Exception | None = None


def _step(tx: Tx, body: Callable[[Tx], Any]) -> Step:
    # One savepoint name for every step (each is released before the next begins): the
    # connection's cache of prepared statements keeps one entry for it, not one per step.
    events, touched = len(tx.events), set(tx.touched)
    tx.db.execute("SAVEPOINT step")
    try:
        value = body(tx)
    except sqlite3.OperationalError as e:
        if _unavailable(e, "") is not None:
            raise  # the disk or a lock: the transaction fails, and is tried again whole
        error: Exception = e
    except Exception as e:
        error = e
    else:
        tx.db.execute("RELEASE step")
        return Step(value)
    tx.db.execute("ROLLBACK TO step")
    tx.db.execute("RELEASE step")
    del tx.events[events:]
    tx.touched = touched
    return Step(error=error)


def _settle_nothing(tx: Tx) -> None:
    pass


def _store_result(tx: Tx, key: RequestKey, result: Any) -> None:
    tx.run(
        "INSERT OR IGNORE INTO requests (key, result, created, method, params_hash) VALUES (?, ?, ?, ?, ?)",
        (key.key, encode(result), tx.now, key.method, key.params_hash),
    )


def _once(body: Callable[[Tx], Any], key: RequestKey) -> Callable[[Tx], Any]:
    def once(tx: Tx) -> Any:
        row = tx.one("SELECT result, method, params_hash FROM requests WHERE key = ?", (key.key,))
        if row is not None:
            key.check(row[1], row[2])
            return msgspec.json.decode(row[0])
        result = body(tx)
        tx.run("DELETE FROM requests WHERE created < ?", (tx.now - REQUESTS_KEPT,))
        _store_result(tx, key, result)
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
        raise StoreError(
            f"the database schema is version {version}, newer than this torcd ({len(MIGRATIONS)}); upgrade torcd"
        )
    db.create_function("name_template", 1, name_template, deterministic=True)  # for migration 14
    for n in range(version, len(MIGRATIONS)):
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in (s.strip() for s in MIGRATIONS[n].split(";")):
                if stmt:
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version = {n + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
