"""Deleting a big workflow: gone at once for every reader, its rows deleted in batches that let
other workflows' writes in between, and a purge cut by a crash finished at the next start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from torcctl.errors import ConnectError
from torcd.store.workflows import PURGE_BATCH

JOBS = 2 * PURGE_BATCH + 123  # three batches


def big_spec(n: int = JOBS) -> str:
    return f"""
        name: big
        jobs:
          - {{name: gate, command: "exit 0"}}
          - name: j{{i}}
            command: "true"
            parameters: {{i: "1:{n}"}}
            depends_on: [gate, "k{{i}}"]
          - name: k{{i}}
            command: "true"
            parameters: {{i: "1:{n}"}}
            depends_on: [never]
          - {{name: never, command: "exit 3"}}
        """


def rows_left(state_dir: str, wf: int) -> dict[str, int]:
    with sqlite3.connect(f"file:{Path(state_dir) / 'torcd.store.db'}?mode=ro", uri=True) as db:
        out = {}
        for table in ("jobs", "attempts", "events", "user_data", "failure_handlers"):
            out[table] = db.execute(f"SELECT count(*) FROM {table} WHERE workflow_id = ?", (wf,)).fetchone()[0]
        out["deps"] = db.execute("SELECT count(*) FROM deps WHERE job_id NOT IN (SELECT id FROM jobs)").fetchone()[0]
        out["purges"] = db.execute("SELECT count(*) FROM purges").fetchone()[0]
    return out


def test_a_big_workflow_is_deleted_in_batches_and_nothing_of_it_is_left(daemon):
    other = daemon.submit("name: other\njobs:\n  - {name: a, command: 'true'}\n", name="other.yaml")
    wf = daemon.submit(big_spec())
    daemon.wait(wf, state=("done", "awaiting_classification"))  # never fails: its dependents are canceled
    assert rows_left(daemon.state_dir, wf)["jobs"] == 2 * JOBS + 2
    daemon.call("workflows.delete", {"workflow_id": wf})
    assert rows_left(daemon.state_dir, wf) == dict.fromkeys(
        ("jobs", "attempts", "events", "user_data", "failure_handlers", "deps", "purges"), 0
    )
    with pytest.raises(Exception, match=f"no workflow {wf}"):
        daemon.call("workflows.show", {"workflow_id": wf})
    daemon.wait(other)
    assert [w["id"] for w in daemon.call("workflows.list")] == [other]
    assert daemon.jobs(other)["a"].status == "completed"


def test_a_purge_cut_by_a_crash_is_finished_at_the_next_start(make_daemon):
    d = make_daemon().start(crash_at="while_purging")
    other = d.submit("name: other\njobs:\n  - {name: a, command: 'true'}\n", name="other.yaml")
    wf = d.submit(big_spec())
    d.wait(wf, state=("done", "awaiting_classification"))
    with pytest.raises((ConnectError, OSError)):
        d.call("workflows.delete", {"workflow_id": wf})  # the daemon dies after the first batch
    d.wait_dead()
    left = rows_left(d.state_dir, wf)
    assert left["purges"] == 1 and 0 < left["jobs"] < 2 * JOBS + 2  # gone for readers, rows half deleted
    d.restart()
    assert rows_left(d.state_dir, wf)["purges"] == 0
    assert rows_left(d.state_dir, wf)["jobs"] == 0
    with pytest.raises(Exception, match=f"no workflow {wf}"):
        d.call("workflows.show", {"workflow_id": wf})
    assert [w["id"] for w in d.call("workflows.list")] == [other]
