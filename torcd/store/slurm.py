"""Store methods for Slurm: allocations, their workers, claims by workers, auto-schedule state.

A base of `Store`, built on the database alone; the same rule holds: one transaction per
change plus its events, and job statuses change only through the lifecycle.
"""

from __future__ import annotations

import msgspec

from torcd import events as E
from torcd.core import allocations as A, lifecycle as L
from torcd.core.autoschedule import AutoSchedulePolicy, ScheduleInputs
from torcd.core.resources import ComputeNode
from torcd.core.slurm_plan import JobNeed
from torcd.core.status import JobStatus as S
from torcd.store.db import Database, Tx, require_workflow
from torcd.errors import InvalidParams, NotFound
from torcd.protocol import AllocationInfo
from torcd.spec.parse import SlurmSchedulerSpec
from torcd.store.lifecycle import RUNNABLE_COLUMNS, apply, runnable, runnables_fitting

_encode = msgspec.json.Encoder().encode


def _compute_node(text: str | None) -> ComputeNode:
    return msgspec.json.decode(text, type=ComputeNode) if text else ComputeNode()


def _allocation(row) -> A.Allocation:
    return A.Allocation(row["id"], row["workflow_id"], A.AllocationStatus(row["state"]), row["slurm_job_id"],
                        row["cpus"], row["reason"], row["started"])


def _worker(row) -> A.Worker:
    return A.Worker(row["id"], row["workflow_id"], A.WorkerStatus(row["state"]), row["allocation_id"],
                    row["last_heartbeat"])


class SlurmStore(Database):

    async def set_auto_schedule(self, wf: int, policy: AutoSchedulePolicy) -> None:
        def _body(tx: Tx):
            row = require_workflow(tx, wf)
            if row["executor"] != "slurm" and policy.enabled:
                raise InvalidParams(f"workflow {wf} runs locally; auto-schedule needs a workflow "
                                    f"submitted with `torcctl submit-slurm`", {"field": "$.workflow_id"})
            tx.run("UPDATE workflows SET auto_schedule = ? WHERE id = ?", (_encode(policy), wf))
            tx.emit(E.AutoScheduleSet, wf, action="on" if policy.enabled else "off",
                    message=f"threshold {policy.threshold}, cooldown {policy.cooldown:g}s, "
                            f"stranded timeout {policy.stranded_timeout:g}s")
        return await self.write(_body)

    async def record_event(self, wf: int, kind: type[E.EventBase], **fields) -> None:
        def _body(tx: Tx):
            tx.emit(kind, wf, **fields)
        return await self.write(_body)

    async def auto_scheduled_workflows(self) -> list[tuple[int, AutoSchedulePolicy, float | None]]:
        rows = await self._rows(
            "SELECT id, auto_schedule, last_auto_submit FROM workflows WHERE executor = 'slurm' "
            "AND state = 'active' AND auto_schedule IS NOT NULL")
        out = []
        for r in rows:
            policy = msgspec.json.decode(r["auto_schedule"], type=AutoSchedulePolicy)
            if policy.enabled:
                out.append((r["id"], policy, r["last_auto_submit"]))
        return out

    async def schedulers(self, wf: int) -> dict[str, SlurmSchedulerSpec]:
        rows = await self._rows("SELECT name, spec FROM schedulers WHERE workflow_id = ?", (wf,))
        return {r["name"]: msgspec.json.decode(r["spec"], type=SlurmSchedulerSpec) for r in rows}

    async def workflow_account(self, wf: int) -> str | None:
        rows = await self._rows("SELECT account FROM workflows WHERE id = ?", (wf,))
        return rows[0][0] if rows else None

    async def schedule_inputs(self, wf: int, scheduler: str, last_submit: float | None) -> ScheduleInputs:
        r = (await self._rows(
            f"""SELECT count(*), sum(attempt_id > 1), min(CASE WHEN attempt_id > 1 THEN updated END)
                FROM jobs WHERE workflow_id = ? AND status = {int(S.READY)} AND coalesce(scheduler, '') = ?""",
            (wf, scheduler)))[0]
        alloc = dict(await self._rows(
            "SELECT state, count(*) FROM allocations WHERE workflow_id = ? AND scheduler = ? GROUP BY state",
            (wf, scheduler)))
        return ScheduleInputs(r[0], r[1] or 0, r[2], alloc.get("running", 0), alloc.get("pending", 0), last_submit)

    async def ready_job_needs(self, wf: int, scheduler: str) -> list[JobNeed]:
        """What each ready job of the scheduler needs, its limits as its next attempt will have them."""
        return [JobNeed(r[0], r[1], r[2], r[3], r[4]) for r in await self._rows(
            f"""SELECT name, num_cpus, min(CAST(memory_bytes * memory_scale AS INTEGER), 1 << 60), num_gpus,
                       runtime_seconds * runtime_scale FROM jobs
                WHERE workflow_id = ? AND status = {int(S.READY)} AND coalesce(scheduler, '') = ? ORDER BY id""",
            (wf, scheduler))]

    async def open_allocation_count(self, wf: int, scheduler: str) -> int:
        return (await self._rows(
            "SELECT count(*) FROM allocations WHERE workflow_id = ? AND scheduler = ? AND state IN "
            "('pending', 'running')", (wf, scheduler)))[0][0]

    async def add_allocation(self, wf: int, scheduler: str, cpus: int, reason: str, auto: bool) -> int:
        def _body(tx: Tx):
            require_workflow(tx, wf)
            aid = tx.run(
                "INSERT INTO allocations (workflow_id, scheduler, state, cpus, submitted, reason) "
                "VALUES (?, ?, 'pending', ?, ?, ?)", (wf, scheduler, cpus, tx.now, reason))
            if auto:
                tx.run("UPDATE workflows SET last_auto_submit = ? WHERE id = ?", (tx.now, wf))
            return aid
        return await self.write(_body)

    async def allocation_submitted(self, aid: int, slurm_job_id: str | None, script: str, error: str | None) -> None:
        def _body(tx: Tx):
            a = _allocation(tx.one("SELECT * FROM allocations WHERE id = ?", (aid,)))
            if error:
                d = A.handle(A.SubmitFailed(tx.now, error), a)
                tx.run("UPDATE allocations SET state = ?, ended = ?, reason = ?, script_path = ? WHERE id = ?",
                       (d.status.value, d.ended, d.reason, script, aid))
            else:
                d = A.handle(A.Submitted(tx.now, slurm_job_id), a)
                tx.run("UPDATE allocations SET slurm_job_id = ?, script_path = ? WHERE id = ?",
                             (slurm_job_id, script, aid))
            tx.publish(d.events)
        return await self.write(_body)

    async def open_allocations(self) -> list[tuple[int, int, str | None, str]]:
        """(allocation id, workflow id, slurm job id, state) of pending/running allocations."""
        return [tuple(r) for r in await self._rows(
            "SELECT id, workflow_id, slurm_job_id, state FROM allocations WHERE state IN ('pending', 'running')")]

    async def update_allocations(self, seen: list[tuple[int, str | None]]) -> None:
        """Apply what the Slurm queue said of each allocation: (allocation id, its Slurm state, None
        if it was not in the queue), decided again against the row as it is now."""
        if not seen:
            return
        def _body(tx: Tx):
            for aid, slurm_state in seen:
                row = tx.one("SELECT * FROM allocations WHERE id = ?", (aid,))
                if row is None:
                    continue
                d = A.handle(A.QueueSeen(tx.now, slurm_state), _allocation(row))
                if d.status is None:
                    continue
                tx.run("UPDATE allocations SET state = ?, slurm_state = ?, started = ?, ended = ? "
                             "WHERE id = ?", (d.status.value, d.slurm_state, d.started, d.ended, aid))
                tx.publish(d.events)
        return await self.write(_body)

    async def allocations(self, wf: int) -> list[AllocationInfo]:
        rows = await self._rows("SELECT * FROM allocations WHERE workflow_id = ? ORDER BY id", (wf,))
        return [AllocationInfo(id=r["id"], workflow_id=r["workflow_id"], scheduler=r["scheduler"],
                               slurm_job_id=r["slurm_job_id"], state=r["state"], slurm_state=r["slurm_state"],
                               cpus=r["cpus"], submitted=r["submitted"], started=r["started"], ended=r["ended"],
                               reason=r["reason"], script_path=r["script_path"]) for r in rows]

    # -- workers -----------------------------------------------------------

    async def register_worker(self, wf: int, allocation_id: int | None, host: str, cpus: int,
                              resume: int | None = None) -> int:
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
                    tx.run("UPDATE workers SET last_heartbeat = ?, host = ?, cpus = ? WHERE id = ?",
                           (tx.now, host, cpus, resume))
                    tx.publish(d.events)
                    return resume
            wid = tx.run(
                "INSERT INTO workers (workflow_id, allocation_id, host, cpus, registered, last_heartbeat, state) "
                "VALUES (?, ?, ?, ?, ?, ?, 'active')", (wf, allocation_id, host, cpus, tx.now, tx.now))
            if allocation_id is not None:
                a = tx.one("SELECT * FROM allocations WHERE id = ? AND workflow_id = ?", (allocation_id, wf))
                d = None if a is None else A.handle(A.WorkerJoined(tx.now, wid, host), _allocation(a))
                if d is not None and d.status is not None:
                    tx.run("UPDATE allocations SET state = ?, started = ? WHERE id = ?",
                                 (d.status.value, d.started, allocation_id))
                    tx.publish(d.events)
            tx.publish(A.handle(A.Registered(tx.now, host, cpus),
                                A.Worker(wid, wf, A.WorkerStatus.ACTIVE, allocation_id, tx.now)).events)
            return wid
        return await self.write(_body)

    async def worker(self, worker_id: int):
        """The worker's row, with its allocation's state (`allocation_state`, None outside one)."""
        rows = await self._rows("SELECT w.*, a.state AS allocation_state, a.scheduler AS scheduler FROM workers w "
                                "LEFT JOIN allocations a ON a.id = w.allocation_id WHERE w.id = ?", (worker_id,))
        if not rows:
            raise NotFound(f"no worker {worker_id}")
        return rows[0]

    async def heartbeat(self, worker_id: int) -> None:
        def _body(tx: Tx):
            tx.run("UPDATE workers SET last_heartbeat = ? WHERE id = ?", (tx.now, worker_id))
        return await self.write(_body)

    async def claim_for_worker(self, worker_id: int, cpus: int, memory: int | None = None, gpus: int | None = None,
                               time_left: float | None = None):
        """Ready jobs of the worker's workflow that fit its free `cpus`, `memory` and `gpus` (None:
        not counted) and whose runtime ends within `time_left`, except retries of jobs that failed
        on it; and again those handed to it that it has not reported started, in case the reply
        that carried them was lost (the worker skips repeats)."""

        if cpus <= 0:
            return []
        def _body(tx: Tx):
            w = tx.one("SELECT * FROM workers WHERE id = ?", (worker_id,))
            if w is None or w["state"] != "active":
                return []
            tx.run("UPDATE workers SET last_heartbeat = ? WHERE id = ?", (tx.now, worker_id))
            unstarted = [runnable(r) for r in tx.rows(
                f"""SELECT {RUNNABLE_COLUMNS} JOIN attempts a ON a.job_id = j.id AND a.run_id = j.run_id
                    AND a.attempt_id = j.attempt_id WHERE j.worker_id = ? AND j.status = {int(S.RUNNING)}
                    AND a.end_time IS NULL AND a.pid IS NULL""", (worker_id,))]
            alloc = tx.one("SELECT scheduler FROM allocations WHERE id = ?", (w["allocation_id"],))
            scheduler = alloc["scheduler"] if alloc else None  # a worker outside any allocation takes all
            # What it was handed again is not free: it starts those too.
            free_cpus = cpus - sum(j.num_cpus for j in unstarted)
            free_memory = None if memory is None else memory - sum(j.memory or 0 for j in unstarted)
            free_gpus = None if gpus is None else gpus - sum(j.num_gpus for j in unstarted)
            if free_cpus <= 0 or (free_memory is not None and free_memory < 0) or (free_gpus is not None
                                                                                   and free_gpus < 0):
                return unstarted
            # Each job that could fit on its own is considered, so jobs that cannot fit now
            # (GPUs, memory) do not hide those behind them.
            rows = tx.rows(
                f"""SELECT {RUNNABLE_COLUMNS}
                    WHERE j.workflow_id = ? AND j.status = {int(S.READY)} AND NOT w.held
                      AND (? IS NULL OR j.scheduler = ?)
                      AND j.num_cpus <= ? AND (? IS NULL OR j.num_gpus <= ?)
                      AND (? IS NULL OR coalesce(j.memory_bytes * j.memory_scale, 0) <= ?)
                      AND (? IS NULL OR j.runtime_seconds IS NULL OR j.runtime_seconds * j.runtime_scale <= ?)
                      AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = j.id AND a.worker_id = ?
                                      AND a.return_code != 0)
                    ORDER BY j.claim_order, j.id LIMIT ?""",
                (w["workflow_id"], scheduler, scheduler, free_cpus, free_gpus, free_gpus, free_memory, free_memory,
                 time_left, time_left, worker_id, free_cpus))
            claimed = [runnable(r) for r in runnables_fitting(rows, free_cpus, free_memory, free_gpus)]
            apply(tx, (L.handle(L.Claimed(tx.now, worker_id, w["host"], j.stdout_path, j.stderr_path, j.runtime,
                                            j.memory),
                                L.Job(j.job_id, j.workflow_id, j.name, S.READY, j.run_id, j.attempt_id))
                       for j in claimed))
            return unstarted + claimed
        return await self.write(_body)

    async def worker_attempt_starts(self, worker_id: int) -> dict[tuple[int, int, int], float]:
        """When each of the worker's attempts that never reported an exit was handed out, by
        (job, run, attempt)."""
        return {(r[0], r[1], r[2]): r[3] for r in await self._rows(
            f"""SELECT j.id, j.run_id, j.attempt_id, a.start_time FROM jobs j JOIN attempts a ON a.job_id = j.id
                AND a.run_id = j.run_id AND a.attempt_id = j.attempt_id
                WHERE j.worker_id = ? AND j.status = {int(S.RUNNING)} AND a.end_time IS NULL""", (worker_id,))}

    async def worker_running_jobs(self, worker_id: int) -> list[tuple[int, int, int]]:
        """(job, run, attempt) of the worker's attempts that never reported an exit."""
        return list(await self.worker_attempt_starts(worker_id))

    async def worker_may_get_more(self, w, time_left: float | None, memory: int | None = None,
                                  gpus: int | None = None) -> bool:
        """Whether a job of the worker's workflow (and scheduler) may still become ready for it:
        one not yet ready or still running anywhere, or a ready one it could take were it empty.
        `w` is its row (`worker`). Two index lookups that stop at the first match."""
        waiting = ",".join(str(int(s)) for s in (S.UNINITIALIZED, S.BLOCKED, S.PENDING, S.RUNNING, S.RECOVERING))
        scheduler = w["scheduler"]
        return bool((await self._rows(
            f"""SELECT EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_id = ? AND j.status IN ({waiting})
                               AND (? IS NULL OR j.scheduler = ?))
                    OR EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_id = ? AND j.status = {int(S.READY)}
                               AND (? IS NULL OR j.scheduler = ?) AND j.num_cpus <= ?
                               AND (? IS NULL OR j.num_gpus <= ?)
                               AND (? IS NULL OR coalesce(j.memory_bytes * j.memory_scale, 0) <= ?)
                               AND (? IS NULL OR j.runtime_seconds IS NULL
                                    OR j.runtime_seconds * j.runtime_scale <= ?)
                               AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = j.id AND a.worker_id = ?
                                               AND a.return_code != 0))""",
            (w["workflow_id"], scheduler, scheduler, w["workflow_id"], scheduler, scheduler, w["cpus"], gpus, gpus,
             memory, memory, time_left, time_left, w["id"])))[0][0])

    async def worker_waiting(self, worker_id: int) -> int:
        """Jobs of this worker that are still running or awaiting a decision or a recovery."""
        return (await self._rows(
            f"SELECT count(*) FROM jobs WHERE worker_id = ? AND status IN ({int(S.RUNNING)}, {int(S.RECOVERING)})",
            (worker_id,)))[0][0]

    async def finish_worker(self, worker_id: int, reason: str, state: str = "done") -> None:
        """Close a worker; recovery scripts it was given but did not finish go back to the daemon."""
        def _body(tx: Tx):
            w = tx.one("SELECT * FROM workers WHERE id = ?", (worker_id,))
            if w is None:
                return
            d = A.handle(A.Closed(tx.now, A.WorkerStatus(state), reason), _worker(w))
            if d.status is None:
                return
            tx.run("UPDATE workers SET state = ?, ended = ?, reason = ? WHERE id = ?",
                         (d.status.value, d.ended, d.reason, worker_id))
            tx.run(
                f"""UPDATE attempts SET recovery_outcome = NULL WHERE recovery_outcome = 'running' AND job_id IN
                    (SELECT id FROM jobs WHERE worker_id = ? AND status = {int(S.RECOVERING)})""", (worker_id,))
            tx.publish(d.events)
        return await self.write(_body)

    async def active_workers(self) -> list[tuple[int, int | None, float, ComputeNode]]:
        """(worker id, allocation id, last heartbeat, its workflow's settings) of workers still active."""
        return [(r[0], r[1], r[2], _compute_node(r[3])) for r in await self._rows(
            "SELECT w.id, w.allocation_id, w.last_heartbeat, f.compute_node FROM workers w "
            "JOIN workflows f ON f.id = w.workflow_id WHERE w.state = 'active'")]

    async def compute_node(self, wf: int) -> ComputeNode:
        rows = await self._rows("SELECT compute_node FROM workflows WHERE id = ?", (wf,))
        return _compute_node(rows[0][0] if rows else None)

    async def allocation_credential(self, aid: int) -> tuple[str, int] | None:
        rows = await self._rows("SELECT credential_hash, workflow_id FROM allocations WHERE id = ? "
                                "AND credential_hash IS NOT NULL", (aid,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def set_allocation_credential(self, aid: int, credential_hash: str) -> None:
        def _body(tx: Tx):
            tx.run("UPDATE allocations SET credential_hash = ? WHERE id = ?", (credential_hash, aid))
        return await self.write(_body)

    async def allocation_verdict(self, aid: int) -> str | None:
        """The Slurm state last seen for an allocation (TIMEOUT, OUT_OF_MEMORY, COMPLETED...)."""
        rows = await self._rows("SELECT slurm_state FROM allocations WHERE id = ?", (aid,))
        return rows[0][0] if rows else None

    async def allocation_state(self, aid: int) -> str | None:
        rows = await self._rows("SELECT state FROM allocations WHERE id = ?", (aid,))
        return rows[0][0] if rows else None
