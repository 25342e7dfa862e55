"""The RPC methods: each translates its params into one call on a service or the store, and the
result back. Who may call what is decided at the door (`server`, `credentials`); what a change
does is decided in `core`; the daemon's own life (stopping) in `daemon`. No policy here.

METHODS has one line per method: its params type and its handler.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NamedTuple, Protocol

import msgspec
import structlog

from torcd import protocol as p
from torcd.config import Config
from torcd.core.actions import Action
from torcd.core.autoschedule import AutoSchedulePolicy
from torcd.core.resources import Capacity, Requirements, format_bytes, parse_duration, parse_memory, shortfalls
from torcd.core.retry import simulate
from torcd.core.slurm_plan import JobNeed, SchedulerPlan
from torcd.core.spawning import LINEAGE_RECORD_PREFIX
from torcd.core.status import JobStatus
from torcd.credentials import RequestKey, current_caller, idempotency_key
from torcd.errors import InvalidParams, NotFound, SpecError, Unauthorized
from torcd.faults import crash_point
from torcd.services.allocations import AllocationService
from torcd.services.job_logs import with_tails
from torcd.services.spawner import Spawner
from torcd.services.workers import WorkerService
from torcd.spec.data import missing_inputs
from torcd.spec.fragment import check_fragment, on_slurm_adding
from torcd.spec.parse import ExpandedJob, SlurmSchedulerSpec, Workflow, on_slurm, parse_spec_in_pool
from torcd.spec.slurm import runs_on_slurm
from torcd.store.actions import ActionStore
from torcd.store.execution import ExecutionStore
from torcd.store.queries import JobFilter, Queries
from torcd.store.slurm import SlurmStore
from torcd.store.workers import WorkerStore
from torcd.store.workflows import WorkflowStore

log = structlog.get_logger("torcd")


class Control(Protocol):
    """What the handlers may ask of the daemon itself."""

    api_url: str
    tcp_url: str | None

    def info(self) -> p.Ping: ...
    async def stop(self, params: p.Shutdown) -> dict: ...
    async def stop_processes(self, job_ids: list[int]) -> None: ...
    async def stop_actions(self, workflow_id: int, why: str) -> None: ...


class RequestLog(Protocol):
    """Results of idempotent requests whose change is made outside one transaction."""

    async def request_result(self, key: RequestKey) -> Any: ...
    async def remember(self, key: RequestKey, result: Any) -> None: ...


class StoreParts(NamedTuple):
    """The parts of the store the RPC methods call, and nothing more."""

    queries: Queries
    workflows: WorkflowStore
    execution: ExecutionStore  # classifications
    slurm: SlurmStore  # auto-schedule and allocations
    actions: ActionStore  # whether actions submit a workflow's allocations
    workers: WorkerStore  # a workflow's compute-node settings, for a registering worker
    requests: RequestLog


class Handlers:
    def __init__(
        self,
        stores: StoreParts,
        config: Config,
        allocations: AllocationService,
        workers: WorkerService,
        control: Control,
    ):
        self.queries, self.workflows, self.execution, self.slurm = (
            stores.queries,
            stores.workflows,
            stores.execution,
            stores.slurm,
        )
        self.action_store, self.worker_store, self.requests = stores.actions, stores.workers, stores.requests
        self.config = config
        self.allocations, self.workers, self.control = allocations, workers, control
        self.spawner = Spawner(stores.workflows.db, stores.slurm)

    async def ping(self, _: p.NoParams) -> p.Ping:
        return self.control.info()

    async def shutdown(self, params: p.Shutdown) -> dict:
        return await self.control.stop(params)

    async def create_workflow(self, params: p.CreateWorkflow) -> p.WorkflowSummary:
        if not os.path.isabs(params.cwd) or not os.path.isdir(params.cwd):  # noqa: ASYNC240 one stat, not worth a thread
            raise InvalidParams(f"cwd must be an existing absolute directory, got {params.cwd!r}", {"field": "$.cwd"})
        spec = await parse_spec_in_pool(params.spec_text, params.spec_path, params.spec_format, params.cwd)
        inputs = (("file", spec.files, spec.required_inputs), ("dataset", spec.datasets, spec.required_datasets))
        for what, entries, required in inputs:
            if missing := await asyncio.to_thread(missing_inputs, entries, required, params.cwd):
                f = missing[0]
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise SpecError(
                    f"input {what} {f.name!r} ({f.path}) does not exist and no job writes it{more}",
                    file=params.spec_path,
                    field=f"$.{what}s[{f.index}]",
                )
        schedulers, jobs = list(spec.schedulers), spec.jobs
        if params.executor == "slurm":
            schedulers, jobs = on_slurm(spec, params.account)
        await self._admit(params.executor, spec, schedulers, jobs)
        wf = await self.workflows.create_workflow(
            spec, params.cwd, params.spec_path, params.executor, params.account, key=idempotency_key.get()
        )
        crash_point("after_create")
        log.info("workflow_created", workflow_id=wf, jobs=len(spec.jobs))
        return await self.queries.workflow(wf)

    async def add_jobs(self, params: p.AddJobs) -> p.AddedJobs:
        wf = await self.queries.workflow(params.workflow_id)
        spec = await parse_spec_in_pool(params.spec_text, params.spec_path, params.spec_format, wf.cwd)
        check_fragment(spec)
        if (inherited := (await self.queries.spawning(wf.id)).stdio) is not None:  # the workflow's, for its jobs
            spec = await parse_spec_in_pool(params.spec_text, params.spec_path, params.spec_format, wf.cwd, inherited)
        schedulers, jobs = list(spec.schedulers), spec.jobs
        if wf.executor == "slurm":  # the workflow's schedulers, and those the new jobs bring
            stored = await self.slurm.schedulers(wf.id)
            schedulers, jobs = on_slurm_adding(spec, list(stored.values()), await self.slurm.workflow_account(wf.id))
            schedulers += [s for name, s in stored.items() if name not in {n.name for n in schedulers}]
        await self._admit(wf.executor, spec, schedulers, jobs)
        ids = await self.workflows.add_jobs(wf.id, spec, params.depends_on_ids, key=idempotency_key.get())
        log.info("jobs_added", workflow_id=wf.id, jobs=len(ids))
        return p.AddedJobs(ids)

    async def spawn_jobs(self, params: p.SpawnJobs) -> p.Spawned:
        plan = await self.spawner.prepare(params, current_caller.get().allocation_id)
        if plan.jobs and plan.executor == "slurm":
            await self.spawner.place(plan, self.allocations.misfits)
        if plan.jobs:
            await self._admit(plan.executor, plan.spec, plan.schedulers, plan.jobs)
        spawned = await self.spawner.commit(plan, key=idempotency_key.get())
        log.info("jobs_spawned", job_id=params.job_id, lineage=params.lineage, jobs=len(spawned.job_ids))
        return spawned

    async def lineage(self, params: p.LineageRef) -> p.LineageInfo:
        _own_workflow(params.workflow_id)
        return await self.spawner.lineage(params.workflow_id, params.lineage)

    async def _admit(
        self, executor: str, spec: Workflow, schedulers: list[SlurmSchedulerSpec], jobs: list[ExpandedJob]
    ) -> None:
        """Refuse now what would never run, rather than leave it waiting: a Slurm workflow without a
        TCP door for its workers, a spec meant for Slurm run here, a job that fits no node of its
        scheduler, or (here) needs more GPUs or memory than this daemon has."""
        if executor == "slurm":
            if self.control.tcp_url is None:
                raise InvalidParams(
                    "Slurm workers need a TCP door: start torcd with --listen HOST:PORT", {"field": "$.executor"}
                )
            if misfits := await self.allocations.misfits(schedulers, [(j.scheduler, _need(j)) for j in jobs]):
                raise InvalidParams(
                    misfits[0] + (f" (and {len(misfits) - 1} more)" if len(misfits) > 1 else ""), {"field": "$.jobs"}
                )
            return
        if why := runs_on_slurm(spec.schedulers):
            raise InvalidParams(
                f"this workflow is meant for Slurm ({why}): submit it with `torcctl submit-slurm`; "
                "`submit` and `run` would run its jobs on this machine",
                {"field": "$.executor"},
            )
        have, memory = len(self.config.gpus), self.config.max_memory
        for job in jobs:
            short = shortfalls(
                Requirements(num_gpus=job.num_gpus, memory_bytes=job.memory_bytes), Capacity(memory=memory, gpus=have)
            )
            if "gpus" in short:
                raise InvalidParams(
                    f"job {job.name!r} needs {job.num_gpus} GPUs and this daemon has {have} (see torcd --gpus)",
                    {"field": "$.jobs"},
                )
            if "memory" in short:
                raise InvalidParams(
                    f"job {job.name!r} needs {format_bytes(job.memory_bytes or 0)} of memory and "
                    f"this daemon's budget is {format_bytes(memory)} (see torcd --memory)",
                    {"field": "$.jobs"},
                )

    async def plan_slurm(self, params: p.CreateWorkflow) -> list[SchedulerPlan]:
        """The allocations `submit-slurm` would ask for now (the jobs ready at the start), per scheduler."""
        spec = await parse_spec_in_pool(params.spec_text, params.spec_path, params.spec_format, params.cwd)
        schedulers, jobs = on_slurm(spec, params.account)
        return [
            await self.allocations.plan(s, [_need(j) for j in jobs if j.scheduler == s.name and not j.depends_on])
            for s in schedulers
        ]

    async def results(self, params: p.Results) -> list[p.AttemptInfo]:
        return await self.queries.results(
            params.workflow_id, params.all_runs, params.failed, params.return_code, params.limit, params.after_job_id
        )

    async def files(self, params: p.ListFiles) -> list[p.FileInfo]:
        rows = await self.queries.files(params.workflow_id, params.limit)
        found = await asyncio.to_thread(_existing, rows)
        return [
            p.FileInfo(r["name"], r["path"], r["producer"], _names(r["readers"]), there)
            for r, there in zip(rows, found)
        ]

    async def datasets(self, params: p.WorkflowRef) -> list[p.DatasetInfo]:
        rows = await self.queries.datasets(params.workflow_id)
        found = await asyncio.to_thread(_existing, rows)
        return [
            p.DatasetInfo(
                r["name"],
                r["path"],
                r["hash_mode"],
                r["description"],
                _names(r["writers"]),
                _names(r["readers"]),
                there,
            )
            for r, there in zip(rows, found)
        ]

    async def get_user_data(self, params: p.UserDataRef) -> p.UserDataInfo:
        _own_workflow(params.workflow_id)
        rows = await self.queries.user_data(params.workflow_id, params.name)
        if not rows:
            raise NotFound(f"workflow {params.workflow_id} has no user data named {params.name!r}")
        return _user_data(rows[0])

    async def list_user_data(self, params: p.ListUserData) -> list[p.UserDataInfo]:
        _own_workflow(params.workflow_id)
        return [_user_data(r) for r in await self.queries.user_data(params.workflow_id, limit=params.limit)]

    async def set_user_data(self, params: p.SetUserData) -> dict:
        _own_workflow(params.workflow_id)
        data = msgspec.json.encode(params.data)
        if len(data) > p.MAX_USER_DATA_BYTES:
            raise InvalidParams(
                f"user data {params.name!r} is {len(data):,} bytes as JSON; the limit is {p.MAX_USER_DATA_BYTES:,}",
                {"field": "$.data"},
            )
        if params.name.startswith(LINEAGE_RECORD_PREFIX):
            raise InvalidParams(
                f"user data named {LINEAGE_RECORD_PREFIX}... is a lineage's record, written by jobs.spawn only",
                {"field": "$.name"},
            )
        caller = current_caller.get()
        await self.workflows.set_user_data(params.workflow_id, params.name, data, may_add=caller.admin)
        return {"name": params.name, "bytes": len(data)}

    async def list_workflows(self, _: p.NoParams) -> list[p.WorkflowSummary]:
        return await self.queries.workflows()

    async def show_workflow(self, params: p.WorkflowRef) -> p.WorkflowSummary:
        return await self.queries.workflow(params.workflow_id)

    async def cancel_workflow(self, params: p.WorkflowRef) -> p.WorkflowSummary:
        await self.control.stop_processes(await self.workflows.cancel_workflow(params.workflow_id))
        await self.control.stop_actions(params.workflow_id, "the workflow was canceled")
        return await self.queries.workflow(params.workflow_id)

    async def delete_workflow(self, params: p.WorkflowRef) -> dict:
        await self.workflows.delete_workflow(params.workflow_id, key=idempotency_key.get())
        await self.control.stop_actions(params.workflow_id, "the workflow was deleted")
        self.workers.forget(params.workflow_id)
        return {"deleted": params.workflow_id}

    async def recover(self, params: p.Recover) -> p.RecoverResult:
        plan, reset = await self.workflows.recover(
            params.workflow_id,
            params.memory_multiplier,
            params.runtime_multiplier,
            params.retry_unknown,
            params.dry_run,
            key=idempotency_key.get(),
            source=params.source,
            reason=params.reason,
        )
        return p.RecoverResult(plan, reset, params.dry_run)

    async def update_resources(self, params: p.UpdateResources) -> dict:
        if params.memory is None and params.runtime is None and params.num_cpus is None:
            raise InvalidParams("give memory, runtime or num_cpus", {"field": "$"})
        try:
            memory = None if params.memory is None else parse_memory(params.memory)
        except ValueError as e:
            raise InvalidParams(str(e), {"field": "$.memory"}) from None
        try:
            runtime = None if params.runtime is None else parse_duration(params.runtime)
        except ValueError as e:
            raise InvalidParams(str(e), {"field": "$.runtime"}) from None
        job = await self.queries.job(params.job_id)
        executor = (await self.queries.workflow(job.workflow_id)).executor
        short = (
            shortfalls(
                Requirements(params.num_cpus or 1, memory_bytes=memory),
                Capacity(self.config.max_cpus, self.config.max_memory),
            )
            if executor == "local"
            else []
        )
        if "memory" in short:
            assert memory is not None  # a job short of memory is one given a memory limit
            raise InvalidParams(
                f"{format_bytes(memory)} is more than this daemon's memory budget of "
                f"{format_bytes(self.config.max_memory)} (see torcd --memory)",
                {"field": "$.memory"},
            )
        if "cpus" in short:
            raise InvalidParams(
                f"{params.num_cpus} CPUs is more than this daemon runs at once "
                f"({self.config.max_cpus}; see torcd --cpus)",
                {"field": "$.num_cpus"},
            )
        changes = await self.workflows.update_resources(
            params.job_id, memory, runtime, params.num_cpus, params.source, params.reason, key=idempotency_key.get()
        )
        return {"job_id": params.job_id, "changed": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}}

    async def reset_status(self, params: p.ResetStatus) -> dict:
        return {
            "reset": await self.workflows.reset_status(
                params.workflow_id, params.failed_only, key=idempotency_key.get()
            )
        }

    async def reinitialize(self, params: p.Reinitialize) -> dict:
        rerun = await self.workflows.reinitialize(params.workflow_id, params.dry_run, key=idempotency_key.get())
        shown = dict(itertools.islice(rerun.items(), 10_000))  # a reply of bounded size; `count` is all
        return {"dry_run": params.dry_run, "count": len(rerun), "jobs": shown, "truncated": len(shown) < len(rerun)}

    async def list_jobs(self, params: p.ListJobs) -> list[p.JobInfo]:
        jobs = await self.queries.jobs(
            params.workflow_id,
            _status(params.status),
            params.limit,
            params.offset,
            name=params.name,
            template=params.template,
            sort=params.sort,
            descending=params.descending,
        )
        return await asyncio.to_thread(with_tails, jobs)

    async def count_jobs(self, params: p.CountJobs) -> p.JobCount:
        which = JobFilter(_status(params.status), params.name, params.template, params.label, params.labelled)
        return p.JobCount(await self.queries.count_jobs(params.workflow_id, which))

    async def workflow_graph(self, params: p.WorkflowGraph) -> p.Graph:
        return p.Graph(*await self.queries.graph(params.workflow_id, params.max_nodes))

    async def list_workers(self, params: p.WorkflowRef) -> list[p.WorkerInfo]:
        rows = await self.queries.workers(params.workflow_id)
        return [p.WorkerInfo(**{f: r[f] for f in p.WorkerInfo.__struct_fields__}) for r in rows]

    async def list_actions(self, params: p.WorkflowRef) -> list[p.ActionInfo]:
        out = []
        for r in await self.queries.actions(params.workflow_id):
            a = msgspec.json.decode(r["spec"], type=Action)
            out.append(
                p.ActionInfo(
                    r["id"],
                    a.index,
                    a.trigger,
                    a.action_type,
                    a.commands,
                    a.persistent,
                    r["state"],
                    r["run_id"],
                    r["message"],
                )
            )
        return out

    async def explain_job(self, params: p.ExplainJob) -> p.Explanation:
        """What the job's failure handler would do with these exit codes (default: its attempts')."""
        h = await self.queries.failure_handling(params.job_id)
        exits = h.exits if params.exit_codes is None else [(c, None) for c in params.exit_codes]
        steps = simulate(h.rules, h.use_pending_failed, exits)
        final = steps[-1].status if steps else "ready"
        codes = [c for c, _ in exits]
        return p.Explanation(params.job_id, h.job_name, h.handler, h.use_pending_failed, codes, steps, final)

    async def show_job(self, params: p.JobRef) -> p.JobInfo:
        return (await asyncio.to_thread(with_tails, [await self.queries.job(params.job_id)], False))[0]

    async def job_attempts(self, params: p.JobRef) -> list[p.AttemptInfo]:
        return await self.queries.attempts(params.job_id)

    async def retry_jobs(self, params: p.Classify) -> p.ClassifyResult:
        return await self._classify_all(params, "retry")

    async def fail_jobs(self, params: p.Classify) -> p.ClassifyResult:
        return await self._classify_all(params, "fail")

    async def _classify_all(self, params: p.Classify, action: Literal["retry", "fail"]) -> p.ClassifyResult:
        decisions = [(j, action, params.reason) for j in dict.fromkeys(params.job_ids)]
        return p.ClassifyResult(await self.execution.classify(decisions, params.source, key=idempotency_key.get()))

    async def classify_jobs(self, params: p.ClassifyMany) -> p.ClassifyResult:
        decisions = [(c.job_id, c.action, c.reason) for c in params.classifications]
        return p.ClassifyResult(
            await self.execution.classify(decisions, params.source, params.workflow_id, key=idempotency_key.get())
        )

    async def list_events(self, params: p.ListEvents) -> list[p.Event]:
        return await self.queries.events(params.workflow_id, params.after, params.limit, params.last)

    async def set_auto_schedule(self, params: p.SetAutoSchedule) -> dict:
        policy = AutoSchedulePolicy(params.enabled, params.threshold, params.cooldown, params.stranded_timeout)
        await self.slurm.set_auto_schedule(params.workflow_id, policy)
        return msgspec.structs.asdict(policy)

    async def submit_allocations(self, params: p.SubmitAllocations) -> list[p.AllocationInfo]:
        # sbatch cannot share a transaction: a repeat is answered from the first call's result.
        key = idempotency_key.get()
        ids = None if key is None else await self.requests.request_result(key)
        if ids is None and params.count is None and await self.action_store.schedules_by_actions(params.workflow_id):
            ids = []  # its schedule_nodes actions submit allocations as their jobs become ready
        if ids is None:
            ids = await self.allocations.submit(
                params.workflow_id, "submitted by torcctl", count=params.count, scheduler=params.scheduler
            )
            if key is not None:
                await self.requests.remember(key, ids)
        return [a for a in await self.slurm.allocations(params.workflow_id) if a.id in ids]

    async def list_allocations(self, params: p.WorkflowRef) -> list[p.AllocationInfo]:
        await self.queries.workflow(params.workflow_id)
        return await self.slurm.allocations(params.workflow_id)

    async def register_worker(self, params: p.RegisterWorker) -> dict:
        wid = await self.workers.register(params, current_caller.get())
        return {
            "worker_id": wid,
            "poll_interval": self.config.worker_poll_interval,
            "compute_node": await self.worker_store.compute_node(params.workflow_id),
        }

    async def worker_poll(self, params: p.WorkerPoll) -> p.WorkerPollResult:
        return await self.workers.poll(params, current_caller.get(), self.control.tcp_url or self.control.api_url)

    async def finish_worker(self, params: p.WorkerFinish) -> dict:
        await self.workers.finish(params, current_caller.get())
        return {"finished": params.worker_id}


Handler = Callable[[Handlers], Callable[[Any], Awaitable[Any]]]


def _own_workflow(wf: int) -> None:
    """An allocation's credential reaches the user data of its own workflow only."""
    caller = current_caller.get()
    if not caller.admin and caller.workflow_id != wf:
        raise Unauthorized(f"allocation {caller.allocation_id}'s credential may not reach workflow {wf}")


def _status(label: str | None) -> JobStatus | None:
    try:
        return None if label is None else JobStatus.parse(label)
    except ValueError as e:
        raise InvalidParams(str(e), {"field": "$.status"}) from None


def _user_data(r) -> p.UserDataInfo:
    return p.UserDataInfo(
        r["name"], msgspec.json.decode(r["data"]), bool(r["is_ephemeral"]), r["producer"], r["updated"]
    )


def _need(job: ExpandedJob) -> JobNeed:
    return JobNeed(job.name, job.num_cpus, job.memory_bytes, job.num_gpus, job.runtime_seconds)


def _existing(rows: list) -> list[bool]:
    """Whether each row's `path` (relative to its workflow's `cwd`) exists now (file I/O)."""
    return [os.path.exists(os.path.join(r["cwd"], r["path"])) for r in rows]


def _names(joined: str | None) -> list[str]:
    """Job names as the store's queries join them (group_concat with a unit separator)."""
    return joined.split("\x1f") if joined else []


METHODS: dict[str, tuple[type, Handler]] = {
    "ping": (p.NoParams, lambda h: h.ping),
    "shutdown": (p.Shutdown, lambda h: h.shutdown),
    "workflows.create": (p.CreateWorkflow, lambda h: h.create_workflow),
    "workflows.add_jobs": (p.AddJobs, lambda h: h.add_jobs),
    "jobs.spawn": (p.SpawnJobs, lambda h: h.spawn_jobs),
    "jobs.lineage": (p.LineageRef, lambda h: h.lineage),
    "workflows.list": (p.NoParams, lambda h: h.list_workflows),
    "workflows.show": (p.WorkflowRef, lambda h: h.show_workflow),
    "workflows.cancel": (p.WorkflowRef, lambda h: h.cancel_workflow),
    "workflows.delete": (p.WorkflowRef, lambda h: h.delete_workflow),
    "workflows.reset_status": (p.ResetStatus, lambda h: h.reset_status),
    "workflows.reinitialize": (p.Reinitialize, lambda h: h.reinitialize),
    "workflows.plan_slurm": (p.CreateWorkflow, lambda h: h.plan_slurm),
    "workflows.results": (p.Results, lambda h: h.results),
    "workflows.files": (p.ListFiles, lambda h: h.files),
    "workflows.datasets": (p.WorkflowRef, lambda h: h.datasets),
    "workflows.graph": (p.WorkflowGraph, lambda h: h.workflow_graph),
    "user_data.get": (p.UserDataRef, lambda h: h.get_user_data),
    "user_data.set": (p.SetUserData, lambda h: h.set_user_data),
    "user_data.list": (p.ListUserData, lambda h: h.list_user_data),
    "workflows.recover": (p.Recover, lambda h: h.recover),
    "jobs.update_resources": (p.UpdateResources, lambda h: h.update_resources),
    "jobs.list": (p.ListJobs, lambda h: h.list_jobs),
    "jobs.count": (p.CountJobs, lambda h: h.count_jobs),
    "jobs.show": (p.JobRef, lambda h: h.show_job),
    "jobs.explain": (p.ExplainJob, lambda h: h.explain_job),
    "jobs.attempts": (p.JobRef, lambda h: h.job_attempts),
    "jobs.retry": (p.Classify, lambda h: h.retry_jobs),
    "jobs.fail": (p.Classify, lambda h: h.fail_jobs),
    "jobs.classify": (p.ClassifyMany, lambda h: h.classify_jobs),
    "events.list": (p.ListEvents, lambda h: h.list_events),
    "workflows.set_auto_schedule": (p.SetAutoSchedule, lambda h: h.set_auto_schedule),
    "allocations.submit": (p.SubmitAllocations, lambda h: h.submit_allocations),
    "allocations.list": (p.WorkflowRef, lambda h: h.list_allocations),
    "workers.list": (p.WorkflowRef, lambda h: h.list_workers),
    "actions.list": (p.WorkflowRef, lambda h: h.list_actions),
    "workers.register": (p.RegisterWorker, lambda h: h.register_worker),
    "workers.poll": (p.WorkerPoll, lambda h: h.worker_poll),
    "workers.finish": (p.WorkerFinish, lambda h: h.finish_worker),
}
