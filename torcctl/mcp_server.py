"""`torcctl mcp`: a Model Context Protocol server on stdio, so that an AI agent can look at the
jobs parked as pending_failed and classify them, through the daemon's RPC like any client."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from torcctl.client import Client, RpcError
from torcd.protocol import JobInfo

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

    return server


def _call(client: Client, method: str, params: dict, result_type=None):
    try:
        return client.call(method, params, result_type)
    except RpcError as e:
        raise ToolError(e.message) from None  # the agent sees why, and can correct its call


def serve(client: Client) -> int:
    build_server(client).run("stdio")
    return 0
