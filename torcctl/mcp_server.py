"""`torcctl mcp`: a Model Context Protocol server on stdio, so that an AI agent can look at a
workflow (its status, jobs, attempts, what they used), classify the jobs parked as
pending_failed, and recover jobs that ran out of memory or time, through the daemon's RPC like
any client. Every change it makes records `source: mcp` and the agent's reason."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from torcctl.client import Client, RpcError
import msgspec

from torcd.protocol import AttemptInfo, JobInfo, WorkflowSummary

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
    def recover_workflow(workflow_id: int, reason: Annotated[str, Field(min_length=1)], dry_run: bool = True,
                         memory_multiplier: float = 1.5, runtime_multiplier: float = 1.4,
                         retry_unknown: bool = False) -> dict[str, Any]:
        """Give failed jobs that ran out of memory or time more (memory: what they used times the
        multiplier; runtime: theirs times the multiplier) and run them and what they block again.
        Call with dry_run first to see the plan; the workflow must have nothing running."""
        return msgspec.to_builtins(_call(client, "workflows.recover", {
            "workflow_id": workflow_id, "dry_run": dry_run, "memory_multiplier": memory_multiplier,
            "runtime_multiplier": runtime_multiplier, "retry_unknown": retry_unknown, "source": "mcp",
            "reason": reason}))

    return server


def _call(client: Client, method: str, params: dict, result_type=None):
    try:
        return client.call(method, params, result_type)
    except RpcError as e:
        raise ToolError(e.message) from None  # the agent sees why, and can correct its call


def serve(client: Client) -> int:
    build_server(client).run("stdio")
    return 0
