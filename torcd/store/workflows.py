"""The store's writes to whole workflows: create, add jobs, cancel, delete, reset, recover, user data
and a job's limits; and `settle`, which says after each transaction whether a workflow is done.

What a change does to a job is decided by `core.lifecycle`, through `store.lifecycle`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

import msgspec

from torcd import events as E
from torcd.core import lifecycle as L
from torcd.core.limits import Adjustment
from torcd.core.status import ACTIVE, FAILED_LIKE, FINAL, JobStatus
from torcd.credentials import RequestKey
from torcd.errors import InvalidParams, InvalidTransition, NotFound
from torcd.faults import crash_point
from torcd.protocol import MAX_USER_DATA_ENTRIES
from torcd.spec.data import dataset_mtimes, file_mtimes
from torcd.spec.parse import Workflow, on_slurm
from torcd.spec.schema import ExpandedJob
from torcd.store import actions as store_actions
from torcd.store import limits as store_recover
from torcd.store import new_jobs as store_new_jobs
from torcd.store import reinit as store_reinit
from torcd.store.db import Database, Tx, require_workflow
from torcd.store.db import encode as _encode
from torcd.store.lifecycle import FACT_COLUMNS, downstream, fact, handle, reset_jobs
from torcd.store.new_jobs import insert_deps, insert_handlers_and_schedulers, insert_jobs
from torcd.store.queries import COUNTS, labelled

S = JobStatus
_ACTIVE_SQL = ",".join(str(int(s)) for s in ACTIVE)


PURGE_BATCH = 5000  # jobs (with their dependencies and attempts) per transaction: a few ms each


def purge_batch(tx: Tx, wf: int) -> bool:
    """Delete one batch of a deleted workflow's rows; False once nothing is left."""
    batch = "SELECT id FROM jobs WHERE workflow_id = ? ORDER BY id LIMIT ?"
    if tx.one("SELECT 1 FROM jobs WHERE workflow_id = ? LIMIT 1", (wf,)) is not None:
        tx.run(f"DELETE FROM deps WHERE job_id IN ({batch})", (wf, PURGE_BATCH))
        tx.run(f"DELETE FROM attempts WHERE job_id IN ({batch})", (wf, PURGE_BATCH))
        tx.run(f"DELETE FROM jobs WHERE id IN ({batch})", (wf, PURGE_BATCH))
        return True
    events = "SELECT seq FROM events WHERE workflow_id = ? ORDER BY seq LIMIT ?"
    if tx.delete(f"DELETE FROM events WHERE seq IN ({events})", (wf, 4 * PURGE_BATCH)):
        return True
    tx.run("DELETE FROM attempts WHERE workflow_id = ?", (wf,))  # of jobs already gone (none, normally)
    tx.run("DELETE FROM purges WHERE workflow_id = ?", (wf,))
    return False


def settle(tx: Tx, with_actions: set[int]) -> None:
    """Mark touched workflows done when nothing more can run, active again otherwise."""
    for wf in sorted(tx.touched):
        row = tx.one("SELECT state FROM workflows WHERE id = ?", (wf,))
        if row is None or row[0] == "canceled":
            continue
        busy = (
            tx.one_row(f"SELECT EXISTS (SELECT 1 FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL}))", (wf,))
        )[0] or (wf in with_actions and store_actions.mark_due(tx, wf, idle=True))
        if busy:
            if row[0] != "active":
                tx.run("UPDATE workflows SET state = 'active' WHERE id = ?", (wf,))
            continue
        counts = labelled(tx.rows(COUNTS, (wf,)))
        state = "awaiting_classification" if counts.get("pending_failed") else "done"
        if state != row[0]:
            tx.run("UPDATE workflows SET state = ? WHERE id = ?", (state, wf))
            summary = ", ".join(f"{n} {k}" for k, n in counts.items())
            kind = E.WorkflowAwaitingClassification if state == "awaiting_classification" else E.WorkflowDone
            tx.events.append(kind(workflow_id=wf, time=tx.now, message=summary, status=_outcome(counts)))


class WorkflowStore:
    """Changes to whole workflows, each one transaction plus its events."""

    def __init__(self, db: Database, with_actions: set[int]):
        self.db = db
        self.with_actions = with_actions  # shared with the actions part and `settle`

    async def create_workflow(
        self,
        spec: Workflow,
        cwd: str,
        spec_path: str,
        executor: str = "local",
        account: str | None = None,
        key: RequestKey | None = None,
    ) -> int:
        schedulers, jobs = list(spec.schedulers), spec.jobs
        if executor == "slurm":
            schedulers, jobs = on_slurm(spec, account)

        def _body(tx: Tx):
            wf = _insert_workflow(tx, spec, cwd, spec_path, executor, account)
            handler_ids = insert_handlers_and_schedulers(tx, wf, spec, schedulers)
            ids = insert_jobs(tx, wf, spec, jobs, handler_ids)
            insert_deps(tx, jobs, ids)
            if spec.files:
                _insert_files(tx, wf, spec, ids)
            if spec.datasets:
                _insert_datasets(tx, wf, spec, ids)
            if spec.actions:
                store_actions.insert_actions(tx, wf, spec.actions, ids)
                self.with_actions.add(wf)  # before the commit's settle, which looks at it
            if spec.user_data:
                _insert_user_data(tx, wf, spec, jobs, ids)
            tx.emit(E.WorkflowCreated, wf, job_count=len(jobs), message=spec.name)
            return wf

        return await self.db.write(_body, key=key)

    async def add_jobs(
        self, wf: int, spec: Workflow, depends_on_ids: Mapping[str, Sequence[int]], key: RequestKey | None = None
    ) -> dict[str, int]:
        """Add the spec's jobs to a workflow that exists, in one transaction; each new job's id by name."""
        return await self.db.write(lambda tx: store_new_jobs.add_jobs(tx, wf, spec, depends_on_ids), key=key)

    async def cancel_workflow(self, wf: int) -> list[int]:
        """Cancel every unfinished job; return the ids of jobs that had a process running."""

        def _body(tx: Tx):
            require_workflow(tx, wf)
            rows = tx.rows(
                f"SELECT {FACT_COLUMNS} FROM jobs "
                f"WHERE workflow_id = ? AND status NOT IN ({','.join(str(int(s)) for s in FINAL)})",
                (wf,),
            )
            stop = handle(tx, L.Canceled(tx.now), map(fact, rows))
            tx.run("UPDATE workflows SET state = 'canceled' WHERE id = ?", (wf,))
            store_actions.disarm_due(tx, wf)
            tx.emit(E.WorkflowCanceled, wf, job_count=len(rows))
            return [i.job_id for i in stop if isinstance(i, L.StopProcess)]

        return await self.db.write(_body)

    async def delete_workflow(self, wf: int, key: RequestKey | None = None) -> None:
        """The workflow is gone at once (its row and its small tables, in one transaction); its
        jobs, dependencies, attempts and events follow in batches, each a transaction of its own,
        so a million-job workflow never holds the write lock long enough to stall the others.
        Ids are never reused (AUTOINCREMENT), and nothing reads a job without its workflow."""

        def _body(tx: Tx):
            require_workflow(tx, wf)
            busy = tx.one_row(f"SELECT count(*) FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL})", (wf,))
            if busy[0]:
                raise InvalidTransition(f"workflow {wf} has {busy[0]} unfinished jobs; cancel it first")
            tx.run("DELETE FROM file_readers WHERE file_id IN (SELECT id FROM files WHERE workflow_id = ?)", (wf,))
            tx.run(
                "DELETE FROM dataset_jobs WHERE dataset_id IN (SELECT id FROM datasets WHERE workflow_id = ?)", (wf,)
            )
            tx.run("DELETE FROM data_readers WHERE data_id IN (SELECT id FROM user_data WHERE workflow_id = ?)", (wf,))
            tx.run("DELETE FROM action_jobs WHERE action_id IN (SELECT id FROM actions WHERE workflow_id = ?)", (wf,))
            for table in (
                "failure_handlers",
                "schedulers",
                "allocations",
                "workers",
                "files",
                "datasets",
                "user_data",
                "actions",
                "lineages",
            ):
                tx.run(f"DELETE FROM {table} WHERE workflow_id = ?", (wf,))
            tx.run("DELETE FROM workflows WHERE id = ?", (wf,))
            tx.run("INSERT OR IGNORE INTO purges (workflow_id) VALUES (?)", (wf,))
            self.with_actions.discard(wf)

        await self.db.write(_body, key=key)
        await self.purge(wf)

    async def purge(self, wf: int) -> None:
        """Delete what a deleted workflow left, a batch per transaction (resumed at start)."""
        while await self.db.write(lambda tx: purge_batch(tx, wf)):
            crash_point("while_purging")

    async def purge_deleted(self) -> None:
        """At start: finish the purges a stopped daemon left."""
        for (wf,) in await self.db.rows("SELECT workflow_id FROM purges ORDER BY workflow_id"):
            await self.purge(wf)

    async def reset_status(self, wf: int, failed_only: bool, key: RequestKey | None = None) -> int:
        """Put failed (or all) jobs and what they block back to run in a new run."""

        def _body(tx: Tx):
            row = require_workflow(tx, wf)
            if failed_only:
                seeds = [
                    r[0]
                    for r in tx.rows(
                        f"SELECT id FROM jobs WHERE workflow_id = ? AND status IN "
                        f"({','.join(str(int(s)) for s in FAILED_LIKE)})",
                        (wf,),
                    )
                ]
                targets = sorted(set(seeds) | set(downstream(tx, seeds)))
            else:
                busy = tx.one_row(
                    f"SELECT count(*) FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL})", (wf,)
                )
                if busy[0]:
                    raise InvalidTransition(
                        f"workflow {wf} has {busy[0]} unfinished jobs; cancel it or wait before a full reset"
                    )
                targets = [r[0] for r in tx.rows("SELECT id FROM jobs WHERE workflow_id = ?", (wf,))]
                tx.run(
                    "UPDATE user_data SET data = initial, updated = ? WHERE workflow_id = ? AND is_ephemeral",
                    (tx.now, wf),
                )
            store_actions.rearm(tx, wf)
            return reset_jobs(tx, row, targets, "failed jobs" if failed_only else "all jobs")

        return await self.db.write(_body, key=key)

    async def reinitialize(self, wf: int, dry_run: bool, key: RequestKey | None = None) -> dict[str, str]:
        """Put back to run the jobs whose inputs changed since they ran, and what depends on them
        (`core.changes`); each one's name and why."""
        cwd, paths, set_paths, read = await self.db.write(lambda tx: store_reinit.file_paths(tx, wf))
        mtimes = await asyncio.to_thread(file_mtimes, cwd, paths)
        set_mtimes = await asyncio.to_thread(dataset_mtimes, cwd, set_paths, read)
        return await self.db.write(
            lambda tx: store_reinit.reinitialize(tx, wf, mtimes, dry_run, set_mtimes), key=None if dry_run else key
        )

    async def recover(
        self,
        wf: int,
        memory_multiplier: float,
        runtime_multiplier: float,
        retry_unknown: bool,
        dry_run: bool,
        key: RequestKey | None = None,
        source: str = "cli",
        reason: str = "",
    ) -> tuple[list[Adjustment], int]:
        """Raise the limits of failed jobs by what failed them and run them again (`core.recover`)."""
        return await self.db.write(
            lambda tx: store_recover.recover(
                tx, wf, memory_multiplier, runtime_multiplier, retry_unknown, dry_run, source, reason
            ),
            key=None if dry_run else key,
        )

    async def update_resources(
        self,
        job_id: int,
        memory: int | None,
        runtime: float | None,
        cpus: int | None,
        source: str,
        reason: str,
        key: RequestKey | None = None,
    ) -> dict:
        return await self.db.write(
            lambda tx: store_recover.update_resources(tx, job_id, memory, runtime, cpus, source, reason), key=key
        )

    async def set_user_data(self, wf: int, name: str, data: bytes, may_add: bool) -> None:
        """Replace an entry's value, or add an entry the spec did not declare (`may_add`: not
        from an allocation, whose jobs write what the spec declared), up to a number of them."""

        def _body(tx: Tx):
            require_workflow(tx, wf)
            if tx.db.execute(
                "UPDATE user_data SET data = ?, updated = ? WHERE workflow_id = ? AND name = ?",
                (data.decode(), tx.now, wf, name),
            ).rowcount:
                return
            if not may_add:
                raise NotFound(
                    f"workflow {wf} declares no user data named {name!r}; jobs in an allocation "
                    "write only what the spec declares"
                )
            if tx.one_row("SELECT count(*) FROM user_data WHERE workflow_id = ?", (wf,))[0] >= MAX_USER_DATA_ENTRIES:
                raise InvalidParams(
                    f"workflow {wf} has {MAX_USER_DATA_ENTRIES:,} user data entries, the most it may have",
                    {"field": "$.name"},
                )
            tx.run(
                "INSERT INTO user_data (workflow_id, name, data, initial, updated) VALUES (?, ?, ?, 'null', ?)",
                (wf, name, data.decode(), tx.now),
            )

        await self.db.write(_body)


def _insert_workflow(tx: Tx, spec: Workflow, cwd: str, spec_path: str, executor: str, account: str | None) -> int:
    """Insert the workflow's own row; return its id."""
    output_dir = os.path.normpath(os.path.join(cwd, spec.output_dir))
    upf = None if spec.use_pending_failed is None else int(spec.use_pending_failed)
    return tx.run(
        """INSERT INTO workflows (name, description, cwd, spec_path, output_dir, use_pending_failed,
           created, executor, account, monitor_all, sample_interval, compute_node, about, generate_plots,
           term_signal, term_grace, timeout_exit_code, oom_exit_code, spawning, limit_resources, srun)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            spec.name,
            spec.description,
            cwd,
            spec_path,
            output_dir,
            upf,
            tx.now,
            executor,
            account,
            int(spec.monitoring.all_jobs),
            spec.monitoring.interval,
            _encode(spec.compute_node),
            _encode(msgspec.structs.replace(spec.about, user=spec.about.user or _user_name())),
            int(spec.monitoring.plots),
            spec.execution.term_signal,
            spec.execution.term_grace,
            spec.execution.timeout_exit_code,
            spec.execution.oom_exit_code,
            _encode(spec.spawning),
            int(spec.execution.limit_resources),
            _encode(spec.execution.srun) if spec.execution.srun is not None else None,
        ),
    )


def _insert_user_data(tx: Tx, wf: int, spec: Workflow, jobs: list[ExpandedJob], ids: dict[str, int]) -> None:
    writer = {out: ids[j.name] for j in jobs for out in j.data_outputs}
    tx.many(
        """INSERT INTO user_data (workflow_id, name, data, initial, is_ephemeral, producer, updated)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (
            (wf, d.name, _encode(d.data), _encode(d.data), int(d.is_ephemeral), writer.get(d.name), tx.now)
            for d in spec.user_data.values()
        ),
    )
    data_ids = {name: did for did, name in tx.rows("SELECT id, name FROM user_data WHERE workflow_id = ?", (wf,))}
    tx.many(
        "INSERT INTO data_readers (data_id, job_id) VALUES (?, ?)",
        ((data_ids[i], ids[j.name]) for j in jobs for i in j.data_inputs),
    )


def _insert_files(tx: Tx, wf: int, spec: Workflow, ids: dict[str, int]) -> None:
    writer = {out: ids[j.name] for j in spec.jobs for out in j.outputs}
    tx.many(
        "INSERT INTO files (workflow_id, name, path, producer) VALUES (?, ?, ?, ?)",
        ((wf, f.name, f.path, writer.get(f.name)) for f in spec.files.values()),
    )
    file_ids = {name: fid for fid, name in tx.rows("SELECT id, name FROM files WHERE workflow_id = ?", (wf,))}
    tx.many(
        "INSERT INTO file_readers (file_id, job_id) VALUES (?, ?)",
        ((file_ids[i], ids[j.name]) for j in spec.jobs for i in j.inputs),
    )


def _insert_datasets(tx: Tx, wf: int, spec: Workflow, ids: dict[str, int]) -> None:
    tx.many(
        "INSERT INTO datasets (workflow_id, name, path, hash_mode, description) VALUES (?, ?, ?, ?, ?)",
        ((wf, d.name, d.path, d.hash_mode, d.description) for d in spec.datasets.values()),
    )
    set_ids = {name: sid for sid, name in tx.rows("SELECT id, name FROM datasets WHERE workflow_id = ?", (wf,))}
    tx.many(
        "INSERT INTO dataset_jobs (dataset_id, job_id, writes) VALUES (?, ?, ?)",
        (
            (set_ids[name], ids[j.name], writes)
            for j in spec.jobs
            for writes, names in ((0, j.dataset_inputs), (1, j.dataset_outputs))
            for name in names
        ),
    )


def _outcome(counts: dict[str, int]) -> str:
    if counts.get("pending_failed"):
        return "pending_failed"
    if set(counts) <= {"completed"}:
        return "completed"
    return "failed"


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
