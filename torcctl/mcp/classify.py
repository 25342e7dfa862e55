"""The MCP tool `classify_and_resolve_failures`, checked whole before anything changes: a dry
run is exactly this check, and a real run applies only a batch that passed it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from torcd.core.resources import parse_duration, parse_memory
from torcd.protocol import JobInfo

Call = Callable[..., Any]


def check_classifications(call: Call, workflow_id: int, classifications: list) -> dict[int, JobInfo]:
    """The jobs classified, by id; ToolError naming every classification that cannot apply (a job
    that is not a pending_failed job of the workflow, a repeated job, a limit that does not read,
    a limit given to a job that is to fail)."""
    if not classifications:
        raise ToolError("give at least one classification")
    pending = {
        j.id: j
        for j in call(
            "jobs.list", {"workflow_id": workflow_id, "status": "pending_failed", "limit": 1_000_000}, list[JobInfo]
        )
    }
    problems, seen = [], set()
    for i, c in enumerate(classifications):
        at = f"classifications[{i}]"
        if c.job_id in seen:
            problems.append(f"{at}: job {c.job_id} is classified twice")
        seen.add(c.job_id)
        if c.job_id not in pending:
            problems.append(f"{at}: {_why_not_pending(call, workflow_id, c.job_id)}")
        if c.action == "fail" and (c.memory is not None or c.runtime is not None):
            problems.append(f"{at}: memory and runtime are for a retry; a job to fail does not run again")
        for parse, value in ((parse_memory, c.memory), (parse_duration, c.runtime)):
            if value is not None:
                try:
                    parse(value)
                except ValueError as e:
                    problems.append(f"{at}: {e}")
    if problems:
        raise ToolError("nothing was changed: " + "; ".join(problems))
    return pending


def apply_classifications(
    call: Call, workflow_id: int, classifications: list, default_reason: str
) -> tuple[list[int], list[int]]:
    """New limits first (each job's change recorded with its reason), then every decision in
    one transaction of the daemon's. Returns the ids retried and failed."""
    for c in classifications:
        limits = {k: v for k, v in (("memory", c.memory), ("runtime", c.runtime)) if v is not None}
        if c.action == "retry" and limits:
            call(
                "jobs.update_resources",
                {"job_id": c.job_id, "reason": c.reason or default_reason, "source": "mcp", **limits},
            )
    call(
        "jobs.classify",
        {
            "workflow_id": workflow_id,
            "source": "mcp",
            "classifications": [
                {"job_id": c.job_id, "action": c.action, "reason": c.reason or default_reason} for c in classifications
            ],
        },
    )
    return (
        [c.job_id for c in classifications if c.action == "retry"],
        [c.job_id for c in classifications if c.action == "fail"],
    )


def _why_not_pending(call: Call, workflow_id: int, job_id: int) -> str:
    try:
        job = call("jobs.show", {"job_id": job_id}, JobInfo)
    except ToolError as e:
        return str(e)
    if job.workflow_id != workflow_id:
        return f"job {job_id} is a job of workflow {job.workflow_id}, not {workflow_id}"
    return f"job {job_id} ({job.name}) is not pending_failed (it is {job.status})"
