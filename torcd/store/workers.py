"""The store's side of workers in Slurm allocations: registering, closing, and a worker's poll.

A poll is one transaction, like a pass of the local dispatcher: the starts, exits and recovery
results a worker reports, then what it is handed (jobs that fit, recovery scripts), with the
events published after the commit. Every report is checked against what was handed to that
worker; job statuses change only through the lifecycle.
"""

from __future__ import annotations

import sqlite3

import msgspec

from torcd.core import allocations as A
from torcd.core import lifecycle as L
from torcd.core.exits import SIGKILL_EXIT, Exit
from torcd.core.resources import Capacity, ComputeNode, fit_bounds
from torcd.core.status import JobStatus as S
from torcd.credentials import Caller
from torcd.errors import InvalidParams, NotFound, Unauthorized
from torcd.protocol import Recovery, Runnable, WorkerPoll
from torcd.store.db import Database, Tx, require_workflow
from torcd.store.effective_limits import effective_memory, effective_runtime
from torcd.store.execution import finish_recovery, record_exits, recoveries_query, recovery, set_pids
from torcd.store.lifecycle import RUNNABLE_COLUMNS, apply, runnable, runnables_fitting
from torcd.store.slurm import allocation_facts

CLOCK_SKEW = 60.0  # seconds a node's clock may be off before a kept-in-range end time is worth a warning
ABANDONED = "its worker died; the one that took over its journal cannot watch it"
_WORKER = (
    "SELECT w.*, a.state AS allocation_state, a.scheduler AS scheduler FROM workers w "
    "LEFT JOIN allocations a ON a.id = w.allocation_id WHERE w.id = ?"
)
_ATTEMPT_STARTS = f"""SELECT j.id, j.run_id, j.attempt_id, a.start_time FROM jobs j JOIN attempts a ON a.job_id = j.id
                      AND a.run_id = j.run_id AND a.attempt_id = j.attempt_id
                      WHERE j.worker_id = ? AND j.status = {int(S.RUNNING)} AND a.end_time IS NULL"""
_MEMORY, _RUNTIME = effective_memory(), effective_runtime()
# `resources.fits` in SQL, for a job `j` whose next attempt has its effective limits; its
# parameters are `fit_bounds(capacity)`.
FITS = f"""j.num_cpus <= ? AND (? IS NULL OR j.num_gpus <= ?)
          AND (? IS NULL OR coalesce({_MEMORY}, 0) <= ?)
          AND (? IS NULL OR j.runtime_seconds IS NULL OR {_RUNTIME} <= ?)"""


def bounded_end_time(reported: float, handed_out: float, now: float) -> float:
    """An exit happened after its attempt was handed out and before the daemon heard of it,
    whatever the worker's clock (or a forged report) says."""
    return min(max(reported, handed_out), now)


def _worker(row) -> A.Worker:
    return A.Worker(
        row["id"], row["workflow_id"], A.WorkerStatus(row["state"]), row["allocation_id"], row["last_heartbeat"]
    )


class PollReply(msgspec.Struct):
    """What a poll did: whether the worker is to stop (`active`: it was still open), what it is
    handed, and the exits whose end time was kept in range (report, recorded end time)."""

    active: bool
    stop: bool = False
    jobs: list[Runnable] = []
    recoveries: list[Recovery] = []
    waiting: int = 0
    may_come: bool = False
    clamped: list[tuple[Exit, float]] = []
    workflow_id: int | None = None


class WorkerStore:
    """Workers and their polls, over the one database."""

    def __init__(self, db: Database):
        self.db = db

    async def register_worker(
        self, wf: int, allocation_id: int | None, host: str, cpus: int, resume: int | None = None
    ) -> int:
        """A new worker; or, with `resume`, the same id again for a worker that took over the
        journal of one of this allocation that is still active (what it left is reported under it)."""

        def _body(tx: Tx):
            row = require_workflow(tx, wf)
            if row["executor"] != "slurm":
                raise InvalidParams(f"workflow {wf} runs locally; it takes no workers", {"field": "$.workflow_id"})
            if resume is not None:
                old = tx.one("SELECT * FROM workers WHERE id = ?", (resume,))
                d = None if old is None else A.handle(A.ResumeAsked(tx.now, wf, allocation_id, host), _worker(old))
                if d is not None and d.ignored is None:
                    tx.run(
                        "UPDATE workers SET last_heartbeat = ?, host = ?, cpus = ? WHERE id = ?",
                        (tx.now, host, cpus, resume),
                    )
                    tx.publish(d.events)
                    return resume
            wid = tx.run(
                "INSERT INTO workers (workflow_id, allocation_id, host, cpus, registered, last_heartbeat, state) "
                "VALUES (?, ?, ?, ?, ?, ?, 'active')",
                (wf, allocation_id, host, cpus, tx.now, tx.now),
            )
            if allocation_id is not None:
                a = tx.one("SELECT * FROM allocations WHERE id = ? AND workflow_id = ?", (allocation_id, wf))
                d = None if a is None else A.handle(A.WorkerJoined(tx.now, wid, host), allocation_facts(a))
                if d is not None and d.status is not None:
                    tx.run(
                        "UPDATE allocations SET state = ?, started = ? WHERE id = ?",
                        (d.status.value, d.started, allocation_id),
                    )
                    tx.publish(d.events)
            tx.publish(
                A.handle(
                    A.Registered(tx.now, host, cpus), A.Worker(wid, wf, A.WorkerStatus.ACTIVE, allocation_id, tx.now)
                ).events
            )
            return wid

        return await self.db.write(_body)

    async def worker(self, worker_id: int):
        """The worker's row, with its allocation's state (`allocation_state`, None outside one)."""
        rows = await self.db.rows(_WORKER, (worker_id,))
        if not rows:
            raise NotFound(f"no worker {worker_id}")
        return rows[0]

    async def poll(self, params: WorkerPoll, caller: Caller) -> PollReply:
        """A worker's poll in one transaction, shared with the polls of other workers that
        arrive meanwhile (each under a savepoint of its own): check that the caller may act for
        the worker, record what it reports (only what was handed to it), heartbeat, and unless
        its allocation has ended hand it what fits and the recovery scripts it should run."""
        worker_id = params.worker_id

        def _body(tx: Tx) -> PollReply:
            w = tx.one(_WORKER, (worker_id,))
            check_owner(w, worker_id, caller)
            assert w is not None  # check_owner raises otherwise
            if w["state"] != A.WorkerStatus.ACTIVE.value:
                return PollReply(active=False, stop=True)
            clamped = _record_reports(tx, w, params)
            if params.abandon:  # a worker that took over a dead one's journal cannot watch what it started
                record_exits(
                    tx,
                    [
                        Exit(j, r, a, SIGKILL_EXIT, tx.now, ABANDONED)
                        for j, r, a in _attempt_starts(tx.rows(_ATTEMPT_STARTS, (worker_id,)))
                    ],
                )
            tx.run("UPDATE workers SET last_heartbeat = ? WHERE id = ?", (tx.now, worker_id))
            # An allocation Slurm has ended takes no more work, however alive its worker says it is;
            # what it reports is still recorded.
            if w["allocation_id"] is not None and not A.is_open(w["allocation_state"]):
                return PollReply(active=True, stop=True, clamped=clamped, workflow_id=w["workflow_id"])
            jobs = (
                _claim(tx, w, params.free_cpus, params.free_memory, params.free_gpus, params.time_left)
                if params.claim and params.free_cpus > 0
                else []
            )
            waiting = tx.one_row(
                f"SELECT count(*) FROM jobs WHERE worker_id = ? AND status IN ({int(S.RUNNING)}, {int(S.RECOVERING)})",
                (worker_id,),
            )[0]
            # Only an idle worker asks itself whether to leave: a busy one is not told (it costs a query).
            may_come = bool(jobs or waiting) or _may_get_more(
                tx, w, params.time_left, params.free_memory, params.free_gpus
            )
            return PollReply(
                active=True,
                jobs=jobs,
                recoveries=_hand_out_recoveries(tx, worker_id),
                waiting=waiting,
                may_come=may_come,
                clamped=clamped,
                workflow_id=w["workflow_id"],
            )

        return await self.db.write_in_group(_body)

    async def worker_attempt_starts(self, worker_id: int) -> dict[tuple[int, int, int], float]:
        """When each of the worker's attempts that never reported an exit was handed out, by
        (job, run, attempt)."""
        return _attempt_starts(await self.db.rows(_ATTEMPT_STARTS, (worker_id,)))

    async def worker_running_jobs(self, worker_id: int) -> list[tuple[int, int, int]]:
        """(job, run, attempt) of the worker's attempts that never reported an exit."""
        return list(await self.worker_attempt_starts(worker_id))

    async def finish_worker(self, worker_id: int, reason: str, state: str = "done") -> None:
        """Close a worker; recovery scripts it was given but did not finish go back to the daemon."""

        def _body(tx: Tx):
            w = tx.one("SELECT * FROM workers WHERE id = ?", (worker_id,))
            if w is None:
                return
            d = A.handle(A.Closed(tx.now, A.WorkerStatus(state), reason), _worker(w))
            if d.status is None:
                return
            tx.run(
                "UPDATE workers SET state = ?, ended = ?, reason = ? WHERE id = ?",
                (d.status.value, d.ended, d.reason, worker_id),
            )
            tx.run(
                f"""UPDATE attempts SET recovery_outcome = NULL WHERE recovery_outcome = 'running' AND job_id IN
                    (SELECT id FROM jobs WHERE worker_id = ? AND status = {int(S.RECOVERING)})""",
                (worker_id,),
            )
            tx.publish(d.events)

        return await self.db.write(_body)

    async def active_workers(self) -> list[tuple[int, int | None, float, ComputeNode]]:
        """(worker id, allocation id, last heartbeat, its workflow's settings) of workers still active."""
        return [
            (r[0], r[1], r[2], _compute_node(r[3]))
            for r in await self.db.rows(
                "SELECT w.id, w.allocation_id, w.last_heartbeat, f.compute_node FROM workers w "
                "JOIN workflows f ON f.id = w.workflow_id WHERE w.state = 'active'"
            )
        ]

    async def compute_node(self, wf: int) -> ComputeNode:
        rows = await self.db.rows("SELECT compute_node FROM workflows WHERE id = ?", (wf,))
        return _compute_node(rows[0][0] if rows else None)


def check_owner(w: sqlite3.Row | None, worker_id: int, caller: Caller) -> None:
    """Whether the caller may act for the worker (row `w`, None if there is none): admin, or its
    own allocation's credential, which learns nothing of other workers, not even whether they exist."""
    if caller.admin:
        if w is None:
            raise NotFound(f"no worker {worker_id}")
    elif w is None or w["allocation_id"] != caller.allocation_id:
        raise Unauthorized(f"worker {worker_id} does not belong to allocation {caller.allocation_id}")


def _compute_node(text: str | None) -> ComputeNode:
    return msgspec.json.decode(text, type=ComputeNode) if text else ComputeNode()


def _attempt_starts(rows: list[sqlite3.Row]) -> dict[tuple[int, int, int], float]:
    return {(r[0], r[1], r[2]): r[3] for r in rows}


def _record_reports(tx: Tx, w: sqlite3.Row, params: WorkerPoll) -> list[tuple[Exit, float]]:
    """Record the starts, exits and recovery results of a poll that concern what was handed to
    this worker; return the exits whose end time was kept in range."""
    mine = _attempt_starts(tx.rows(_ATTEMPT_STARTS, (w["id"],)))
    set_pids(
        tx,
        [
            (s.pid, s.job_id, s.run_id, s.attempt_id)
            for s in params.started
            if (s.job_id, s.run_id, s.attempt_id) in mine
        ],
    )
    exits, clamped = [], []
    for e in params.exits:
        handed_out = mine.get((e.job_id, e.run_id, e.attempt_id))
        if handed_out is None:
            continue
        end_time = bounded_end_time(e.end_time, handed_out, tx.now)
        if abs(end_time - e.end_time) > CLOCK_SKEW:
            clamped.append((e, end_time))
        exits.append(msgspec.structs.replace(e, end_time=end_time))
    record_exits(tx, exits)
    for r in params.recoveries:  # only those handed to this worker
        finish_recovery(tx, r, worker_id=w["id"])
    return clamped


def _claim(
    tx: Tx, w: sqlite3.Row, cpus: int, memory: int | None, gpus: int | None, time_left: float | None
) -> list[Runnable]:
    """Ready jobs of the worker's workflow that fit its free `cpus`, `memory` and `gpus` (None:
    not counted) and whose runtime ends within `time_left`, except retries of jobs that failed
    on it; and again those handed to it that it has not reported started, in case the reply
    that carried them was lost (the worker skips repeats)."""
    worker_id = w["id"]
    unstarted = [
        runnable(r)
        for r in tx.rows(
            f"""SELECT {RUNNABLE_COLUMNS} JOIN attempts a ON a.job_id = j.id AND a.run_id = j.run_id
            AND a.attempt_id = j.attempt_id WHERE j.worker_id = ? AND j.status = {int(S.RUNNING)}
            AND a.end_time IS NULL AND a.pid IS NULL""",
            (worker_id,),
        )
    ]
    scheduler = w["scheduler"]  # a worker outside any allocation takes all
    # What it was handed again is not free: it starts those too.
    free_cpus = cpus - sum(j.num_cpus for j in unstarted)
    free_memory = None if memory is None else memory - sum(j.memory or 0 for j in unstarted)
    free_gpus = None if gpus is None else gpus - sum(j.num_gpus for j in unstarted)
    if free_cpus <= 0 or (free_memory is not None and free_memory < 0) or (free_gpus is not None and free_gpus < 0):
        return unstarted
    # Each job that could fit on its own is considered, so jobs that cannot fit now
    # (GPUs, memory) do not hide those behind them.
    rows = tx.rows(
        f"""SELECT {RUNNABLE_COLUMNS}
            WHERE j.workflow_id = ? AND j.status = {int(S.READY)} AND NOT w.held AND j.label IS NULL
              AND (? IS NULL OR j.scheduler = ?) AND {FITS}
              AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = j.id AND a.worker_id = ?
                              AND a.return_code != 0)
            ORDER BY j.claim_order, j.id LIMIT ?""",
        (
            w["workflow_id"],
            scheduler,
            scheduler,
            *fit_bounds(Capacity(free_cpus, free_memory, free_gpus, time_left)),
            worker_id,
            free_cpus,
        ),
    )
    claimed = [runnable(r) for r in runnables_fitting(rows, free_cpus, free_memory, free_gpus)]
    apply(
        tx,
        (
            L.handle(
                L.Claimed(tx.now, worker_id, w["host"], j.stdout_path, j.stderr_path, j.runtime, j.memory),
                L.Job(j.job_id, j.workflow_id, j.name, S.READY, j.run_id, j.attempt_id),
            )
            for j in claimed
        ),
    )
    return unstarted + claimed


def _may_get_more(tx: Tx, w: sqlite3.Row, time_left: float | None, memory: int | None, gpus: int | None) -> bool:
    """Whether a job of the worker's workflow (and scheduler) may still become ready for it:
    one not yet ready or still running anywhere, or a ready one it could take were it empty.
    Two index lookups that stop at the first match."""
    waiting = ",".join(str(int(s)) for s in (S.UNINITIALIZED, S.BLOCKED, S.PENDING, S.RUNNING, S.RECOVERING))
    scheduler = w["scheduler"]
    return bool(
        tx.one_row(
            f"""SELECT EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_id = ? AND j.status IN ({waiting})
                           AND (? IS NULL OR j.scheduler = ?))
                OR EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_id = ? AND j.status = {int(S.READY)}
                           AND (? IS NULL OR j.scheduler = ?) AND {FITS}
                           AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = j.id AND a.worker_id = ?
                                           AND a.return_code != 0))""",
            (
                w["workflow_id"],
                scheduler,
                scheduler,
                w["workflow_id"],
                scheduler,
                scheduler,
                *fit_bounds(Capacity(w["cpus"], memory, gpus, time_left)),
                w["id"],
            ),
        )[0]
    )


def _hand_out_recoveries(tx: Tx, worker_id: int) -> list[Recovery]:
    """Recovery scripts this worker should run, marked running until it reports them (it skips repeats)."""
    recs = [recovery(r) for r in tx.rows(*recoveries_query(worker_id=worker_id))]
    tx.many(
        "UPDATE attempts SET recovery_outcome = 'running' WHERE job_id = ? AND run_id = ? AND attempt_id = ?",
        [(r.job_id, r.run_id, r.attempt_id) for r in recs],
    )
    return recs
