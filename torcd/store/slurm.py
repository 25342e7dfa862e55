"""The store's side of Slurm allocations: what to submit (schedulers, the ready jobs' needs,
auto-schedule state), the allocations and their credentials. Workers are in `store.workers`.

One transaction per change plus its events, like every part of the store.
"""

from __future__ import annotations

import msgspec

from torcd import events as E
from torcd.core import allocations as A
from torcd.core.autoschedule import AutoSchedulePolicy, ScheduleInputs
from torcd.core.slurm_plan import JobNeed
from torcd.core.status import FINAL
from torcd.core.status import JobStatus as S
from torcd.errors import InvalidParams
from torcd.protocol import AllocationInfo
from torcd.spec.parse import SlurmSchedulerSpec
from torcd.store.db import Database, Tx, require_workflow
from torcd.store.effective_limits import effective_memory, effective_runtime

_encode = msgspec.json.Encoder().encode


def allocation_facts(row) -> A.Allocation:
    return A.Allocation(
        row["id"],
        row["workflow_id"],
        A.AllocationStatus(row["state"]),
        row["slurm_job_id"],
        row["cpus"],
        row["reason"],
        row["started"],
    )


class SlurmStore:
    """Allocations and auto-schedule state, over the one database."""

    def __init__(self, db: Database):
        self.db = db

    async def set_auto_schedule(self, wf: int, policy: AutoSchedulePolicy) -> None:
        def _body(tx: Tx):
            row = require_workflow(tx, wf)
            if row["executor"] != "slurm" and policy.enabled:
                raise InvalidParams(
                    f"workflow {wf} runs locally; auto-schedule needs a workflow submitted with `torcctl submit-slurm`",
                    {"field": "$.workflow_id"},
                )
            tx.run("UPDATE workflows SET auto_schedule = ? WHERE id = ?", (_encode(policy), wf))
            tx.emit(
                E.AutoScheduleSet,
                wf,
                action="on" if policy.enabled else "off",
                message=f"threshold {policy.threshold}, cooldown {policy.cooldown:g}s, "
                f"stranded timeout {policy.stranded_timeout:g}s",
            )

        return await self.db.write(_body)

    async def record_event(self, wf: int, kind: type[E.EventBase], **fields) -> None:
        def _body(tx: Tx):
            tx.emit(kind, wf, **fields)

        return await self.db.write(_body)

    async def auto_scheduled_workflows(self) -> list[tuple[int, AutoSchedulePolicy, float | None]]:
        rows = await self.db.rows(
            "SELECT id, auto_schedule, last_auto_submit FROM workflows WHERE executor = 'slurm' "
            "AND state = 'active' AND auto_schedule IS NOT NULL"
        )
        out = []
        for r in rows:
            policy = msgspec.json.decode(r["auto_schedule"], type=AutoSchedulePolicy)
            if policy.enabled:
                out.append((r["id"], policy, r["last_auto_submit"]))
        return out

    async def schedulers(self, wf: int) -> dict[str, SlurmSchedulerSpec]:
        rows = await self.db.rows("SELECT name, spec FROM schedulers WHERE workflow_id = ?", (wf,))
        return {r["name"]: msgspec.json.decode(r["spec"], type=SlurmSchedulerSpec) for r in rows}

    async def workflow_account(self, wf: int) -> str | None:
        rows = await self.db.rows("SELECT account FROM workflows WHERE id = ?", (wf,))
        return rows[0][0] if rows else None

    async def schedule_inputs(self, wf: int, scheduler: str, last_submit: float | None) -> ScheduleInputs:
        r = (
            await self.db.rows(
                f"""SELECT count(*), sum(attempt_id > 1), min(CASE WHEN attempt_id > 1 THEN updated END)
                FROM jobs WHERE workflow_id = ? AND status = {int(S.READY)} AND coalesce(scheduler, '') = ?
                AND label IS NULL""",  # a labelled job waits for its `run --label`, never an allocation
                (wf, scheduler),
            )
        )[0]
        alloc: dict[str, int] = {
            state: n
            for state, n in await self.db.rows(
                "SELECT state, count(*) FROM allocations WHERE workflow_id = ? AND scheduler = ? GROUP BY state",
                (wf, scheduler),
            )
        }
        return ScheduleInputs(r[0], r[1] or 0, r[2], alloc.get("running", 0), alloc.get("pending", 0), last_submit)

    async def ready_job_needs(self, wf: int, scheduler: str) -> list[JobNeed]:
        """What each ready job of the scheduler needs, its limits as its next attempt will have them."""
        return [
            JobNeed(r[0], r[1], r[2], r[3], r[4])
            for r in await self.db.rows(
                f"""SELECT name, num_cpus, {effective_memory("")}, num_gpus, {effective_runtime("")} FROM jobs
                WHERE workflow_id = ? AND status = {int(S.READY)} AND coalesce(scheduler, '') = ? AND label IS NULL
                ORDER BY id""",
                (wf, scheduler),
            )
        ]

    async def open_allocation_count(self, wf: int, scheduler: str) -> int:
        return (
            await self.db.rows(
                "SELECT count(*) FROM allocations WHERE workflow_id = ? AND scheduler = ? AND state IN "
                "('pending', 'running')",
                (wf, scheduler),
            )
        )[0][0]

    async def add_allocation(self, wf: int, scheduler: str, cpus: int, reason: str, auto: bool) -> int:
        def _body(tx: Tx):
            require_workflow(tx, wf)
            aid = tx.run(
                "INSERT INTO allocations (workflow_id, scheduler, state, cpus, submitted, reason) "
                "VALUES (?, ?, 'pending', ?, ?, ?)",
                (wf, scheduler, cpus, tx.now, reason),
            )
            if auto:
                tx.run("UPDATE workflows SET last_auto_submit = ? WHERE id = ?", (tx.now, wf))
            return aid

        return await self.db.write(_body)

    async def allocation_submitted(self, aid: int, slurm_job_id: str | None, script: str, error: str | None) -> None:
        def _body(tx: Tx):
            a = allocation_facts(tx.one("SELECT * FROM allocations WHERE id = ?", (aid,)))
            if error:
                d = A.handle(A.SubmitFailed(tx.now, error), a)
                if d.status is None:  # a worker started it meanwhile: it was submitted after all
                    tx.run("UPDATE allocations SET script_path = ? WHERE id = ?", (script, aid))
                else:
                    tx.run(
                        "UPDATE allocations SET state = ?, ended = ?, reason = ?, script_path = ? WHERE id = ?",
                        (d.status.value, d.ended, d.reason, script, aid),
                    )
            else:
                assert slurm_job_id is not None  # no error: sbatch gave its id
                d = A.handle(A.Submitted(tx.now, slurm_job_id), a)
                tx.run(
                    "UPDATE allocations SET slurm_job_id = ?, script_path = ? WHERE id = ?", (slurm_job_id, script, aid)
                )
            tx.publish(d.events)

        return await self.db.write(_body)

    async def open_allocations(self) -> list[tuple[int, int, str | None, str]]:
        """(allocation id, workflow id, slurm job id, state) of pending/running allocations."""
        return [
            tuple(r)
            for r in await self.db.rows(
                "SELECT id, workflow_id, slurm_job_id, state FROM allocations WHERE state IN ('pending', 'running')"
            )
        ]

    async def queued_without_work(self, wf: int | None = None) -> list[tuple[int, int, str]]:
        """(allocation id, workflow id, slurm job id) of allocations still queued (pending) for
        workflows whose every job is final: none of them will find work (Torc cancels them).
        A job waiting for classification is not final: a retry may want the allocation; nor are
        the allocations of a workflow whose workers wait for jobs added after it ends
        (`compute_node_ignore_workflow_completion`)."""
        unfinished = ",".join(str(int(s)) for s in S if s not in FINAL)  # an index seek per status
        return [
            (r[0], r[1], r[2])
            for r in await self.db.rows(
                f"""SELECT a.id, a.workflow_id, a.slurm_job_id FROM allocations a
                    JOIN workflows w ON w.id = a.workflow_id
                    WHERE a.state = 'pending' AND a.slurm_job_id IS NOT NULL
                      AND (? IS NULL OR a.workflow_id = ?)
                      AND NOT coalesce(json_extract(w.compute_node, '$.ignore_workflow_completion'), 0)
                      AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.workflow_id = a.workflow_id
                                      AND j.status IN ({unfinished}))""",
                (wf, wf),
            )
        ]

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
                d = A.handle(A.QueueSeen(tx.now, slurm_state), allocation_facts(row))
                if d.status is None:
                    continue
                tx.run(
                    "UPDATE allocations SET state = ?, slurm_state = ?, started = ?, ended = ? WHERE id = ?",
                    (d.status.value, d.slurm_state, d.started, d.ended, aid),
                )
                tx.publish(d.events)

        return await self.db.write(_body)

    async def allocations(self, wf: int) -> list[AllocationInfo]:
        rows = await self.db.rows("SELECT * FROM allocations WHERE workflow_id = ? ORDER BY id", (wf,))
        return [
            AllocationInfo(
                id=r["id"],
                workflow_id=r["workflow_id"],
                scheduler=r["scheduler"],
                slurm_job_id=r["slurm_job_id"],
                state=r["state"],
                slurm_state=r["slurm_state"],
                cpus=r["cpus"],
                submitted=r["submitted"],
                started=r["started"],
                ended=r["ended"],
                reason=r["reason"],
                script_path=r["script_path"],
            )
            for r in rows
        ]

    async def allocation_credential(self, aid: int) -> tuple[str, int] | None:
        rows = await self.db.rows(
            "SELECT credential_hash, workflow_id FROM allocations WHERE id = ? AND credential_hash IS NOT NULL", (aid,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def set_allocation_credential(self, aid: int, credential_hash: str) -> None:
        def _body(tx: Tx):
            tx.run("UPDATE allocations SET credential_hash = ? WHERE id = ?", (credential_hash, aid))

        return await self.db.write(_body)

    async def allocation_verdict(self, aid: int) -> str | None:
        """The Slurm state last seen for an allocation (TIMEOUT, OUT_OF_MEMORY, COMPLETED...)."""
        rows = await self.db.rows("SELECT slurm_state FROM allocations WHERE id = ?", (aid,))
        return rows[0][0] if rows else None

    async def allocation_state(self, aid: int) -> str | None:
        rows = await self.db.rows("SELECT state FROM allocations WHERE id = ?", (aid,))
        return rows[0][0] if rows else None
