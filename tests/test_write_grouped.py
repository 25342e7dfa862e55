"""Grouped writes on a real SQLite database: several steps in one transaction, each under a
savepoint of its own, so that a step that fails rolls back alone (its rows and its events) while
the others commit, all in one commit; and bodies that arrive while the writer is busy share it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from torcd import events as E
from torcd.errors import NotFound
from torcd.store.db import Database, Tx


@pytest.fixture(name="db")
async def db_fixture(tmp_path):
    db = await Database.open(str(tmp_path / "torcd.db"))
    published: list[E.EventBase] = []
    db.on_commit = published.extend
    db.published = published  # type: ignore[attr-defined]
    await db.write(lambda tx: tx.run("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
    yield db
    await db.close()


def commits(db: Database) -> list[str]:
    """The COMMITs the writer connection runs from now on."""
    seen: list[str] = []
    db._db.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def insert(x: int, fail: Exception | None = None):
    def body(tx: Tx) -> int:
        tx.run("INSERT INTO t (x) VALUES (?)", (x,))
        tx.publish([E.WorkflowDone(workflow_id=x, time=tx.now, message=f"step {x}")])
        if fail is not None:
            raise fail
        return x

    return body


async def xs(db: Database) -> list[int]:
    return [r[0] for r in await db.rows("SELECT x FROM t ORDER BY x")]


async def test_a_failing_step_rolls_back_alone_and_the_rest_commit_in_one_commit(db):
    seen = commits(db)
    outcomes = await db.write_grouped([insert(1), insert(2, NotFound("a stale report")), insert(3)])
    assert [o.value for o in outcomes] == [1, None, 3]
    assert outcomes[0].error is None and outcomes[2].error is None
    assert isinstance(outcomes[1].error, NotFound) and "stale" in outcomes[1].error.message
    assert await xs(db) == [1, 3]
    assert len(seen) == 1
    # Only the committed steps' events are stored and published, numbered without a gap.
    assert [e.workflow_id for e in db.published] == [1, 3]
    assert [e.seq for e in db.published] == [1, 2]
    assert [r[0] for r in await db.rows("SELECT workflow_id FROM events ORDER BY seq")] == [1, 3]


async def test_a_step_failing_in_sqlite_rolls_back_its_own_writes_only(db):
    def twice(tx: Tx) -> None:
        tx.run("INSERT INTO t (x) VALUES (10)")
        tx.run("INSERT INTO t (x) VALUES (10)")  # the primary key refuses it

    outcomes = await db.write_grouped([insert(5), twice, insert(6)])
    assert isinstance(outcomes[1].error, sqlite3.IntegrityError)
    assert await xs(db) == [5, 6]


async def test_a_failed_commit_fails_every_step(db):
    def settle(tx: Tx) -> None:
        raise sqlite3.IntegrityError("what follows from the transaction cannot be written")

    db.settle = settle
    with pytest.raises(sqlite3.IntegrityError):
        await db.write_grouped([insert(1), insert(2)])
    assert await xs(db) == [] and db.published == []


async def test_bodies_arriving_while_the_writer_is_busy_share_one_commit_and_answer_their_own_callers(db):
    seen = commits(db)
    results = await asyncio.gather(
        *(db.write_in_group(insert(x, NotFound(f"no {x}") if x % 3 == 0 else None)) for x in range(1, 11)),
        return_exceptions=True,
    )
    assert [r.message if isinstance(r, NotFound) else r for r in results] == [
        1, 2, "no 3", 4, 5, "no 6", 7, 8, "no 9", 10,
    ]  # fmt: skip
    assert await xs(db) == [1, 2, 4, 5, 7, 8, 10]
    assert len(seen) == 1  # they all came before the writer was free


async def test_bodies_wait_for_a_write_in_progress_then_go_together(db):
    seen, gate = commits(db), threading.Event()
    busy = asyncio.ensure_future(db.write(lambda tx: gate.wait(10)))
    await asyncio.sleep(0.05)  # the writer thread is held
    grouped = [asyncio.ensure_future(db.write_in_group(insert(x))) for x in (1, 2, 3)]
    await asyncio.sleep(0.05)
    assert not any(g.done() for g in grouped)
    gate.set()
    assert await busy and [await g for g in grouped] == [1, 2, 3]
    assert len(seen) == 2
