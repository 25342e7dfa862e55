"""Spawner: a running job's `jobs.spawn` call (Torc's spawn_jobs), read and checked, then written.

The jobs are read by the spec parser from a fragment made of them (`core.spawning.fragment`),
with the workflow's env and resource requirements, so they mean what the same jobs would in a
spec; the failure handlers and schedulers they name are the workflow's own. A workflow's jobs
may call it at most `SpawnRate`'s pace, whatever else they do.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from torcd import protocol as p
from torcd.core.slurm_plan import JobNeed
from torcd.core.spawning import (
    MAX_STATE_BYTES,
    Spawning,
    SpawnJob,
    SpawnRate,
    fragment,
    lineage_problem,
    outside_dependencies,
    record_name,
    spawning_of,
)
from torcd.credentials import RequestKey
from torcd.errors import InvalidParams, NotFound, SpecError, TooFast
from torcd.spec.fragment import on_slurm_adding
from torcd.spec.parse import SlurmSchedulerSpec, Workflow, parse_spec_in_pool
from torcd.spec.schema import ExpandedJob
from torcd.store import spawned
from torcd.store.db import Database
from torcd.store.slurm import SlurmStore

SPAWN_SPEC = "spawn_jobs"  # how the fragment is named while it is read


class SpawnPlan(msgspec.Struct):
    """A call read and checked, ready to be written (`Spawner.commit`)."""

    params: p.SpawnJobs
    allocation_id: int | None
    workflow_id: int
    executor: str
    spec: Workflow
    schedulers: list[SlurmSchedulerSpec]
    jobs: list[ExpandedJob]  # each with its scheduler, on Slurm
    state: bytes


class Spawner:
    def __init__(self, db: Database, slurm: SlurmStore, clock: Callable[[], float] = time.monotonic):
        self.db, self.slurm, self.clock = db, slurm, clock
        self.rates: dict[int, SpawnRate] = {}

    async def prepare(self, params: p.SpawnJobs, allocation_id: int | None) -> SpawnPlan:
        """Check the call and read its jobs (InvalidParams, naming the field, when they are wrong)."""
        if why := lineage_problem(params.lineage):
            raise InvalidParams(why, {"field": "$.lineage"})
        state = msgspec.json.encode(params.state)
        if len(state) > MAX_STATE_BYTES:
            raise InvalidParams(
                f"state is {len(state):,} bytes as JSON; the limit is {MAX_STATE_BYTES:,} (pass a path, not the data)",
                {"field": "$.state"},
            )
        rows = await self.db.rows(spawned.ORCHESTRATOR_SQL, (params.job_id,))
        job = spawned.check_orchestrator(spawned.orchestrator(rows), params.job_id, allocation_id, params.lineage)
        wf = job.workflow_id
        if (wait := self.rates.setdefault(wf, SpawnRate()).take(self.clock())) is not None:
            raise TooFast(
                f"workflow {wf}'s jobs add jobs too often: ask again in {wait:.1f} s", {"retry_after": round(wait, 3)}
            )
        row = (await self.db.rows("SELECT cwd, executor, account, spawning FROM workflows WHERE id = ?", (wf,)))[0]
        spawning = spawning_of(row["spawning"])
        _check_requirements(params.jobs, spawning, wf)
        spec = await _read(params.jobs, spawning, params.lineage, row["cwd"])
        asked = {j.name: j for j in params.jobs}
        on_slurm = row["executor"] == "slurm"
        for j in spec.jobs:  # on Slurm, a job runs where the job that adds it runs unless it says
            j.failure_handler = asked[j.name].failure_handler
            j.scheduler = asked[j.name].scheduler or (job.scheduler if on_slurm else None)
        schedulers: list[SlurmSchedulerSpec] = []
        jobs = spec.jobs
        if on_slurm and spec.jobs:
            stored = await self.slurm.schedulers(wf)
            for k, one in enumerate(params.jobs):
                if one.scheduler is not None and one.scheduler not in stored:
                    names = ", ".join(sorted(stored)) or "none"
                    raise InvalidParams(
                        f"workflow {wf} has no scheduler named {one.scheduler!r} ({names})",
                        {"field": f"$.jobs[{k}].scheduler"},
                    )
            if any(j.scheduler for j in spec.jobs):
                spec.schedulers = list(stored.values())
            schedulers, jobs = on_slurm_adding(spec, list(stored.values()), row["account"])
            schedulers += [s for name, s in stored.items() if name not in {n.name for n in schedulers}]
        elif (at := next((k for k, one in enumerate(params.jobs) if one.scheduler is not None), None)) is not None:
            raise InvalidParams(
                f"workflow {wf} runs on this machine: `scheduler` names a Slurm scheduler",
                {"field": f"$.jobs[{at}].scheduler"},
            )
        return SpawnPlan(params, allocation_id, wf, row["executor"], spec, schedulers, jobs, state)

    async def place(self, plan: SpawnPlan, misfits: Callable[..., Awaitable[list[str]]]) -> None:
        """On Slurm, a job that names no scheduler runs under its orchestrator's when it fits a
        node of it, else under the first of the workflow's others (by name) that it fits; one
        that fits none stays with the orchestrator's (and is refused with the reason)."""
        named = {j.name for j in plan.params.jobs if j.scheduler is not None}
        by_name = {s.name: s for s in plan.schedulers}
        for k, job in enumerate(plan.jobs):
            if job.name in named or job.scheduler is None:
                continue
            need = JobNeed(job.name, job.num_cpus, job.memory_bytes, job.num_gpus, job.runtime_seconds)
            order = [job.scheduler, *sorted(n for n in by_name if n != job.scheduler)]
            for name in order:
                if name in by_name and not await misfits([by_name[name]], [(name, need)]):
                    plan.jobs[k] = msgspec.structs.replace(job, scheduler=name)
                    break

    async def commit(self, plan: SpawnPlan, key: RequestKey | None = None) -> p.Spawned:
        spec = msgspec.structs.replace(plan.spec, jobs=plan.jobs)
        outside = outside_dependencies(plan.params.jobs)
        return await self.db.write(
            lambda tx: spawned.spawn_jobs(
                tx, plan.params.job_id, plan.allocation_id, plan.params.lineage, spec, outside, plan.state
            ),
            key=key,
        )

    async def lineage(self, wf: int, lineage: str) -> p.LineageInfo:
        rows = await self.db.rows("SELECT spawning FROM workflows WHERE id = ?", (wf,))
        if not rows:
            raise NotFound(f"no workflow {wf}")
        found = await self.db.rows("SELECT iterations FROM lineages WHERE workflow_id = ? AND name = ?", (wf, lineage))
        iterations = found[0][0] if found else 0
        last, final = record_name(lineage, iterations), record_name(lineage, None)
        sql = "SELECT name, data FROM user_data WHERE workflow_id = ? AND name IN (?, ?)"
        records = {r[0]: msgspec.json.decode(r[1]) for r in await self.db.rows(sql, (wf, last, final))}
        return p.LineageInfo(
            lineage,
            iterations,
            spawning_of(rows[0][0]).max_iterations,
            records.get(last) if iterations else None,
            final in records,
            records.get(final),
        )


def _check_requirements(jobs: Sequence[SpawnJob], spawning: Spawning, wf: int) -> None:
    declared = {r.get("name") for r in spawning.resource_requirements}
    for k, job in enumerate(jobs):
        if job.resource_requirements is not None and job.resource_requirements not in declared:
            names = ", ".join(sorted(str(n) for n in declared)) or "its spec declares none"
            raise InvalidParams(
                f"workflow {wf} has no resource requirement named {job.resource_requirements!r} ({names})",
                {"field": f"$.jobs[{k}].resource_requirements"},
            )


async def _read(jobs: Sequence[SpawnJob], spawning: Spawning, lineage: str, cwd: str) -> Workflow:
    """The jobs as the spec parser reads them; its errors name the job (`$.jobs[k]...`)."""
    if not jobs:
        return Workflow("spawned", "", None, "output", {}, [])
    text = msgspec.json.encode(fragment(jobs, spawning, lineage)).decode()
    try:
        return await parse_spec_in_pool(text, SPAWN_SPEC, "json", cwd, spawning.stdio)  # the workflow's stdio
    except SpecError as e:
        where = f"{e.file}:{e.line}: " if e.line else f"{e.file}: "
        message = e.message.removeprefix(where)
        raise InvalidParams(message, {"field": e.field} if e.field else None) from None
