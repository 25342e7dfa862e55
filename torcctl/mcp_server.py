"""`torcctl mcp`: a Model Context Protocol server on stdio, so that an AI agent can look at a
workflow (its status, jobs, attempts, what they used), classify the jobs parked as
pending_failed, and recover jobs that ran out of memory or time, through the daemon's RPC like
any client. Every change it makes records `source: mcp` and the agent's reason."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

import msgspec

from torcctl.client import Client, RpcError

from torcd.protocol import AttemptInfo, JobInfo, WorkflowSummary
from torcd.services.job_logs import open_log_for_reading

MAX_TAIL_LINES = 1000
MAX_TAIL_BYTES = 64 * 1024
INSTRUCTIONS = """\
torc runs workflows of jobs. When a job exits with a code that no rule of its failure handler
handles, it is parked as pending_failed and waits for someone to decide: `retry` it (for a
transient cause: node failure, timeout, out of memory that a retry may avoid) or `fail` it (a
bug or bad input: retrying would fail again; jobs that depend on it are canceled). Look at the
return code and the end of stderr, then classify every job with a short reason."""


class Classification(BaseModel):
    job_id: int = Field(description="id of a pending_failed job of the workflow")
    action: Literal["retry", "fail"] = Field(description="retry: run it again as a new attempt; "
                                                         "fail: give up on it (dependents are canceled)")
    reason: Annotated[str, Field(min_length=1, description="why, in a sentence; kept with the job")]


class PendingFailedJob(BaseModel):
    job_id: int
    name: str
    attempt: int
    return_code: int | None
    command: str
    failure_handler: str | None
    reason: str | None = Field(description="why the failure handler parked it")
    stderr_tail: str = Field(description="the last lines of the attempt's stderr")


class Outcome(BaseModel):
    retried: list[int]
    failed: list[int]


def build_server(client: Client) -> MCPServer:
    server = MCPServer("torc", instructions=INSTRUCTIONS)

    @server.tool()
    def list_pending_failed_jobs(workflow_id: int) -> list[PendingFailedJob]:
        """The workflow's jobs waiting for a decision: id, name, attempt, return code, the failure
        handler's reason for parking it, and the last lines of its stderr."""
        jobs = _call(client, "jobs.list", {"workflow_id": workflow_id, "status": "pending_failed"},
                     list[JobInfo])
        return [PendingFailedJob(job_id=j.id, name=j.name, attempt=j.attempt_id, return_code=j.return_code,
                                 command=j.command, failure_handler=j.failure_handler, reason=j.reason,
                                 stderr_tail=j.stderr_tail or "") for j in jobs]

    @server.tool()
    def classify_and_resolve_failures(workflow_id: int, classifications: list[Classification]) -> Outcome:
        """Retry or fail pending_failed jobs of the workflow, each with its reason. All are applied
        or none: an unknown job, or one that is not pending_failed, changes nothing."""
        _call(client, "jobs.classify", {"workflow_id": workflow_id, "source": "mcp",
                                        "classifications": [c.model_dump() for c in classifications]})
        return Outcome(retried=[c.job_id for c in classifications if c.action == "retry"],
                       failed=[c.job_id for c in classifications if c.action == "fail"])

    @server.tool()
    def get_workflow_status(workflow_id: int) -> dict[str, Any]:
        """The workflow's name, state (active, awaiting_classification, done, canceled), run and job
        counts by status."""
        return msgspec.to_builtins(_call(client, "workflows.show", {"workflow_id": workflow_id}, WorkflowSummary))

    @server.tool()
    def list_jobs(workflow_id: int, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The workflow's jobs (id, name, status, attempt, last return code, limits), optionally only
        those with one status (ready, running, completed, failed, canceled, pending_failed, ...)."""
        params = {"workflow_id": workflow_id, "limit": max(1, min(limit, 10_000))}
        if status:
            params["status"] = status
        return msgspec.to_builtins(_call(client, "jobs.list", params, list[JobInfo]))

    @server.tool()
    def get_job_details(job_id: int) -> dict[str, Any]:
        """One job: its command, status, limits, failure handler, the end of its stderr, and every
        attempt (return code, cause, wall and CPU time, peak memory, log paths)."""
        job = _call(client, "jobs.show", {"job_id": job_id}, JobInfo)
        attempts = _call(client, "jobs.attempts", {"job_id": job_id}, list[AttemptInfo])
        return {"job": msgspec.to_builtins(job), "attempts": msgspec.to_builtins(attempts)}

    @server.tool()
    def get_results(workflow_id: int, failed_only: bool = False) -> list[dict[str, Any]]:
        """Every attempt of the workflow's current run: job, return code, cause (oom, timeout),
        runtime, CPU time and peak memory: what resource utilization to look at before recovering."""
        return msgspec.to_builtins(_call(client, "workflows.results", {"workflow_id": workflow_id,
                                                                        "failed": failed_only}, list[AttemptInfo]))

    @server.tool()
    def get_workflow_summary(workflow_id: int) -> dict[str, Any]:
        """The workflow's status and job counts, with its failures grouped by cause (oom, timeout,
        missing_output, or the exit code) and how long its attempts ran: where to start."""
        info = _call(client, "workflows.show", {"workflow_id": workflow_id}, WorkflowSummary)
        results = _call(client, "workflows.results", {"workflow_id": workflow_id}, list[AttemptInfo])
        causes: dict[str, int] = {}
        for a in results:
            if a.return_code not in (None, 0):
                key = a.cause or f"exit {a.return_code}"
                causes[key] = causes.get(key, 0) + 1
        ran = [a.end_time - a.start_time for a in results if a.end_time is not None]
        return {"workflow": msgspec.to_builtins(info), "attempts": len(results), "failures_by_cause": causes,
                "total_runtime_seconds": round(sum(ran), 3), "longest_runtime_seconds": round(max(ran, default=0), 3)}

    @server.tool()
    def list_failed_jobs(workflow_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """The workflow's failed jobs (and those terminated), each with its last return code, why it
        failed and the end of its stderr."""
        out = []
        for status in ("failed", "terminated"):
            out += msgspec.to_builtins(_call(client, "jobs.list", {"workflow_id": workflow_id, "status": status,
                                                                   "limit": max(1, min(limit, 10_000))}, list[JobInfo]))
        return out[:limit]

    @server.tool()
    def get_job_logs(job_id: int, log_type: Literal["stdout", "stderr"] = "stderr", attempt: int | None = None,
                     tail_lines: Annotated[int, Field(ge=1, le=MAX_TAIL_LINES)] = 100) -> dict[str, Any]:
        """The last lines of one attempt's stdout or stderr (the latest attempt unless one is given);
        at most 1,000 lines and 64 KiB."""
        atts = _call(client, "jobs.attempts", {"job_id": job_id}, list[AttemptInfo])
        if attempt is not None:
            atts = [a for a in atts if a.attempt_id == attempt]
        if not atts:
            raise ToolError(f"job {job_id} has no attempt {attempt}" if attempt else f"job {job_id} has not run yet")
        a = atts[-1]
        path = a.stderr_path if log_type == "stderr" else a.stdout_path
        try:
            with open_log_for_reading(path) as f:
                end = f.seek(0, os.SEEK_END)
                start = max(0, end - MAX_TAIL_BYTES)  # the end of the log, whatever its size
                f.seek(start)
                data = f.read(MAX_TAIL_BYTES)
        except OSError as e:
            raise ToolError(f"cannot read {path}: {e.strerror}") from None
        lines = data.splitlines(keepends=True)
        if start > 0 and lines:
            lines = lines[1:]  # begun mid-line
        shown = lines[-tail_lines:]
        return {"job_id": job_id, "run_id": a.run_id, "attempt_id": a.attempt_id, "path": path,
                "text": b"".join(shown).decode(errors="replace"),
                "truncated": start > 0 and len(shown) < tail_lines}

    @server.tool()
    def check_resource_utilization(workflow_id: int, include_failed: bool = True) -> list[dict[str, Any]]:
        """For each job's last attempt: peak memory and runtime against its limits (percent), CPU
        time, and a note when it came within 10 % of a limit, went over it, or used under a fifth of
        it (a limit that could be lower)."""
        latest: dict[int, AttemptInfo] = {}
        for a in _call(client, "workflows.results", {"workflow_id": workflow_id}, list[AttemptInfo]):
            if a.end_time is not None and (include_failed or a.return_code == 0):
                latest[a.job_id] = a
        return [_utilization(a) for a in latest.values()]

    @server.tool()
    def update_job_resources(job_id: int, reason: Annotated[str, Field(min_length=1)], memory: str | None = None,
                             runtime: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
        """Set one job's limits for its next attempts: memory like "8g", runtime as ISO-8601 like
        "PT2H", CPUs. Refused while the job runs. Rerun it with recover_workflow or a reset."""
        params: dict[str, Any] = {"job_id": job_id, "reason": reason, "source": "mcp"}
        for key, value in (("memory", memory), ("runtime", runtime), ("num_cpus", num_cpus)):
            if value is not None:
                params[key] = value
        return _call(client, "jobs.update_resources", params)

    @server.tool()
    def recover_workflow(workflow_id: int, reason: Annotated[str, Field(min_length=1)], dry_run: bool = True,
                         memory_multiplier: float = 1.5, runtime_multiplier: float = 1.4,
                         retry_unknown: bool = False) -> dict[str, Any]:
        """Give failed or pending_failed jobs that ran out of memory or time more (memory: what they
        used times the multiplier; runtime: theirs times the multiplier) and run them and what they
        block again; a pending_failed one retried so is classified (source recover, with the reason).
        retry_unknown: also the others, as they were. Call with dry_run first to see the plan (it
        changes nothing); the workflow must have nothing running."""
        return msgspec.to_builtins(_call(client, "workflows.recover", {
            "workflow_id": workflow_id, "dry_run": dry_run, "memory_multiplier": memory_multiplier,
            "runtime_multiplier": runtime_multiplier, "retry_unknown": retry_unknown, "source": "mcp",
            "reason": reason}))

    return server


def _utilization(a: AttemptInfo) -> dict[str, Any]:
    runtime = (a.end_time or a.start_time) - a.start_time
    out: dict[str, Any] = {"job_id": a.job_id, "job_name": a.job_name, "attempt_id": a.attempt_id,
                           "return_code": a.return_code, "cause": a.cause, "runtime_seconds": round(runtime, 3),
                           "cpu_seconds": a.cpu_seconds, "peak_memory": a.peak_memory, "notes": []}
    for what, used, limit in (("memory", a.peak_memory, a.memory_limit), ("runtime", runtime, a.runtime_limit)):
        if used is None or not limit:
            continue
        share = used / limit
        out[f"{what}_percent"] = round(100 * share, 1)
        if share > 1 or a.cause == ("oom" if what == "memory" else "timeout"):
            out["notes"].append(f"{what}: over its limit")
        elif share >= 0.9:
            out["notes"].append(f"{what}: within 10 % of its limit")
        elif share < 0.2 and a.return_code == 0:
            out["notes"].append(f"{what}: used under a fifth of its limit")
    return out


def _call(client: Client, method: str, params: dict, result_type=None):
    try:
        return client.call(method, params, result_type)
    except RpcError as e:
        raise ToolError(e.message) from None  # the agent sees why, and can correct its call


def serve(client: Client) -> int:
    build_server(client).run("stdio")
    return 0
