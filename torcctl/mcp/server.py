"""`torcctl mcp`: a Model Context Protocol server on stdio, so that an AI agent can create and
look at a workflow (its status, plan, jobs, attempts, logs, what they used), classify the jobs
parked as pending_failed, and recover jobs that ran out of memory or time, through the daemon's
RPC like any client. The tools take Torc's arguments (torc-mcp-server) and refuse any other; a
dry run changes nothing; every change records `source: mcp` and the agent's reason ("mcp"
when it gives none)."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import msgspec
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from pydantic import BaseModel, ConfigDict, Field

from torcctl import reports
from torcctl.api.client import Client
from torcctl.errors import RpcError
from torcctl.execution_plan import execution_plan
from torcctl.log_scan import MAX_BYTES_PER_LOG, LogScan
from torcctl.sacct import SacctUnavailable, sacct_report
from torcd.protocol import AllocationInfo, AttemptInfo, JobInfo, WorkflowSummary
from torcd.services.job_logs import open_log_for_reading

MAX_TAIL_LINES = 1000
MAX_TAIL_BYTES = 64 * 1024
MAX_PLAN_JOBS = 10_000  # of a stored workflow (one RPC per job)
DEFAULT_REASON = "mcp"
INSTRUCTIONS = """\
torc runs workflows of jobs. When a job exits with a code that no rule of its failure handler
handles, it is parked as pending_failed and waits for someone to decide: `retry` it (for a
transient cause: node failure, timeout, out of memory that a retry may avoid) or `fail` it (a
bug or bad input: retrying would fail again; jobs that depend on it are canceled). Look at the
return code and the end of stderr, then classify every job with a short reason: first with
dry_run true (it changes nothing), then, once the user agrees, with dry_run false."""
Reason = Annotated[
    str, Field(min_length=1, max_length=4096, description='why, in a sentence; kept with the change (default: "mcp")')
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Classification(Strict):
    job_id: int = Field(description="id of a pending_failed job of the workflow")
    action: Literal["retry", "fail"] = Field(
        description="retry: run it again as a new attempt; fail: give up on it (dependents are canceled)"
    )
    memory: str | None = Field(None, description="for a retry: its new memory limit, like '8g'")
    runtime: str | None = Field(None, description="for a retry: its new runtime limit, ISO-8601 like 'PT2H'")
    reason: Reason | None = None


class PendingFailedJob(BaseModel):
    job_id: int
    name: str
    attempt: int
    return_code: int | None
    command: str
    failure_handler: str | None
    reason: str | None = Field(description="why the failure handler parked it")
    stderr_tail: str = Field(description="the last lines of the attempt's stderr")


class TorcTools:
    """The tools, in Torc's order (create, plan, inspect, monitor, analyze, fix); each method's
    docstring is its description."""

    def __init__(self, client: Client):
        self.client = client

    def call(self, method: str, params: dict, result_type=None):
        try:
            return self.client.call(method, params, result_type)
        except RpcError as e:
            raise ToolError(e.message) from None  # the agent sees why, and can correct its call

    def create_workflow(
        self,
        spec_json: str,
        action: Literal["validate", "save_spec_file", "create_workflow"],
        workflow_type: Literal["local", "slurm"],
        user: str | None = None,
        account: str | None = None,
        hpc_profile: str | None = None,
        output_path: str | None = None,
    ) -> dict[str, Any]:
        """Check a workflow spec (JSON, or YAML, JSON5), save it to a file, or create the workflow.
        action: 'validate' (errors and warnings, nothing saved or created), 'save_spec_file' (to
        output_path, never over an existing file: the user edits it and runs `torcctl run FILE`),
        or 'create_workflow' (only when the user asks to run it now: torcd starts its jobs at
        once). An invalid spec is a tool error naming each error's line and field."""
        from torcctl.mcp.specs import create_workflow

        return create_workflow(self.call, spec_json, action, workflow_type, user, account, hpc_profile, output_path)

    def get_execution_plan(self, spec_or_id: str) -> dict[str, Any]:
        """The order jobs will run in: events (the workflow's start, then 'these jobs complete'),
        the jobs each makes ready, the Slurm schedulers they use, and which events follow which.
        spec_or_id: a workflow id, or a spec's text to preview before creating it."""
        from torcctl.mcp.specs import parse_for_tool

        text = spec_or_id.strip()
        if text.isascii() and text.isdigit():
            wf = int(text)
            info = self.call("workflows.show", {"workflow_id": wf}, WorkflowSummary)
            jobs = self.call("jobs.list", {"workflow_id": wf, "limit": MAX_PLAN_JOBS + 1}, list[JobInfo])
            if len(jobs) > MAX_PLAN_JOBS:
                raise ToolError(f"workflow {wf} has over {MAX_PLAN_JOBS:,} jobs: preview its spec's plan instead")
            # jobs.list leaves out dependencies; jobs.show has them, one job at a time
            jobs = [self.call("jobs.show", {"job_id": j.id}, JobInfo) for j in jobs]
            names = {j.id: j.name for j in jobs}
            plan = execution_plan((j.name, [names[d] for d in j.depends_on if d in names], None) for j in jobs)
            return {"source": "database", "workflow_id": wf, "workflow_name": info.name, **plan}
        spec = parse_for_tool(spec_or_id, "spec_or_id")
        plan = execution_plan((j.name, j.depends_on, j.scheduler) for j in spec.jobs)
        return {"source": "spec", "workflow_name": spec.name, **plan}

    def get_job_details(self, job_id: int) -> dict[str, Any]:
        """One job: its command, status, limits, failure handler, the end of its stderr, and every
        attempt (return code, cause, wall and CPU time, peak memory, log paths)."""
        job = self.call("jobs.show", {"job_id": job_id}, JobInfo)
        attempts = self.call("jobs.attempts", {"job_id": job_id}, list[AttemptInfo])
        return {"job": msgspec.to_builtins(job), "attempts": msgspec.to_builtins(attempts)}

    def list_jobs_by_status(self, workflow_id: int, status: str) -> dict[str, Any]:
        """The workflow's jobs with one status: uninitialized, blocked, ready, pending, running,
        completed, failed, canceled, terminated, disabled, pending_failed or recovering."""
        from torcd.core.status import JobStatus

        try:
            label = JobStatus.parse(status).label
        except ValueError as e:
            raise ToolError(str(e)) from None
        jobs = self.call("jobs.list", {"workflow_id": workflow_id, "status": label, "limit": 1_000_000}, list[JobInfo])
        return {
            "workflow_id": workflow_id,
            "status": label,
            "count": len(jobs),
            "jobs": [{"job_id": j.id, "name": j.name, "command": j.command} for j in jobs],
        }

    def list_jobs(self, workflow_id: int, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The workflow's jobs (id, name, status, attempt, last return code, limits), optionally only
        those with one status (ready, running, completed, failed, canceled, pending_failed, ...)."""
        params: dict[str, Any] = {"workflow_id": workflow_id, "limit": max(1, min(limit, 10_000))}
        if status:
            params["status"] = status
        return msgspec.to_builtins(self.call("jobs.list", params, list[JobInfo]))

    def get_workflow_status(self, workflow_id: int) -> dict[str, Any]:
        """The workflow's name, state (active, awaiting_classification, done, canceled), run and job
        counts by status."""
        return msgspec.to_builtins(self.call("workflows.show", {"workflow_id": workflow_id}, WorkflowSummary))

    def get_workflow_summary(self, workflow_id: int) -> dict[str, Any]:
        """The workflow's status and job counts, with its failures grouped by cause (oom, timeout,
        missing_output, or the exit code) and how long its attempts ran: where to start."""
        return self._report(reports.workflow_summary, workflow_id)

    def list_results(
        self,
        workflow_id: int,
        job_id: int | None = None,
        run_id: int | None = None,
        return_code: int | None = None,
        failed_only: bool = False,
        status: str | None = None,
        limit: Annotated[int, Field(ge=1, le=1_000_000)] = 100,
        sort_by: Literal["exec_time_minutes", "peak_memory_bytes", "peak_cpu_percent", "return_code"] | None = None,
        reverse_sort: bool = False,
    ) -> list[dict[str, Any]]:
        """Attempts of the current run (or of run_id): return code, cause, execution time in
        minutes, peak memory, average CPU percent, log paths. failed_only for failures;
        sort_by='exec_time_minutes' with reverse_sort for the slowest; status: the job's status."""
        return self._report(
            reports.list_results,
            workflow_id,
            job_id=job_id,
            run_id=run_id,
            return_code=return_code,
            failed_only=failed_only,
            status=status,
            limit=limit,
            sort_by=sort_by,
            reverse_sort=reverse_sort,
        )

    def get_results(self, workflow_id: int, failed_only: bool = False) -> list[dict[str, Any]]:
        """Every attempt of the workflow's current run: job, return code, cause (oom, timeout),
        runtime, CPU time and peak memory: what resource utilization to look at before recovering."""
        return msgspec.to_builtins(
            self.call("workflows.results", {"workflow_id": workflow_id, "failed": failed_only}, list[AttemptInfo])
        )

    def analyze_workflow_logs(self, workflow_id: int, output_dir: str | None = None) -> dict[str, Any]:
        """Scan the stdout and stderr of every attempt of the workflow for common failures (out of
        memory, time limits, segfaults, permission denied, missing files, full disks, connection
        errors, Python exceptions, Rust panics, Slurm errors): counts by kind, sample lines, and
        what recover_workflow can fix. output_dir: accepted as in Torc; it must be the
        workflow's output directory (torcd knows where each log is)."""
        info = self.call("workflows.show", {"workflow_id": workflow_id}, WorkflowSummary)
        if output_dir is not None:
            given = os.path.realpath(os.path.join(info.cwd, output_dir))
            if given != os.path.realpath(info.output_dir):
                raise ToolError(f"workflow {workflow_id}'s logs are under {info.output_dir}, not {given}")
        attempts = self.call("workflows.results", {"workflow_id": workflow_id, "all_runs": True}, list[AttemptInfo])
        scan, unreadable = LogScan(), []
        for path in dict.fromkeys(p for a in attempts for p in (a.stdout_path, a.stderr_path) if p):
            try:
                with open_log_for_reading(path) as f:
                    end = f.seek(0, os.SEEK_END)
                    f.seek(max(0, end - MAX_BYTES_PER_LOG))
                    scan.add_text(path, f.read().decode(errors="replace"), whole=end <= MAX_BYTES_PER_LOG)
            except FileNotFoundError:
                continue  # the attempt wrote nothing there yet
            except OSError as e:
                unreadable.append(f"{path}: {e.strerror}")
        return _log_report(workflow_id, scan, attempts, unreadable)

    def get_job_logs(
        self,
        job_id: int,
        log_type: Literal["stdout", "stderr"] = "stderr",
        workflow_id: int | None = None,
        run_id: int | None = None,
        attempt_id: int | None = None,
        tail_lines: Annotated[int, Field(ge=1, le=MAX_TAIL_LINES)] | None = None,
    ) -> dict[str, Any]:
        """One attempt's stdout or stderr: the latest attempt, or run_id's (its attempt_id, 1 by
        default, as in Torc). The end of the log: tail_lines lines (all by default), at most
        1,000 lines and 64 KiB."""
        if workflow_id is not None:
            job = self.call("jobs.show", {"job_id": job_id}, JobInfo)
            if job.workflow_id != workflow_id:
                raise ToolError(f"job {job_id} is a job of workflow {job.workflow_id}, not {workflow_id}")
        atts = self.call("jobs.attempts", {"job_id": job_id}, list[AttemptInfo])
        if run_id is not None:
            atts = [a for a in atts if a.run_id == run_id and a.attempt_id == (attempt_id or 1)]
        elif attempt_id is not None:
            atts = [a for a in atts if a.attempt_id == attempt_id]
        if not atts:
            wanted = " ".join(f"{k} {v}" for k, v in (("run", run_id), ("attempt", attempt_id)) if v is not None)
            raise ToolError(f"job {job_id} has no {wanted}" if wanted else f"job {job_id} has not run yet")
        return _log_tail(job_id, atts[-1], log_type, tail_lines)

    def list_failed_jobs(self, workflow_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """The workflow's failed jobs (and those terminated), each with its last return code, why it
        failed and the end of its stderr."""
        out = []
        for status in ("failed", "terminated"):
            out += msgspec.to_builtins(
                self.call(
                    "jobs.list",
                    {"workflow_id": workflow_id, "status": status, "limit": max(1, min(limit, 10_000))},
                    list[JobInfo],
                )
            )
        return out[:limit]

    def check_resource_utilization(self, workflow_id: int, include_failed: bool = True) -> list[dict[str, Any]]:
        """For each job's last attempt: peak memory and runtime against its limits (percent), CPU
        time, and a note when it came within 10 % of a limit, went over it, or used under a fifth of
        it (a limit that could be lower). Fix a limit with update_job_resources or recover_workflow."""
        return self._report(reports.resource_utilization, workflow_id, include_failed=include_failed)

    def update_job_resources(
        self,
        job_id: int,
        memory: str | None = None,
        runtime: str | None = None,
        num_cpus: int | None = None,
        reason: Reason | None = None,
    ) -> dict[str, Any]:
        """Set one job's limits for its next attempts: memory like "8g", runtime as ISO-8601 like
        "PT2H", CPUs. Refused while the job runs. Rerun it with recover_workflow or a reset."""
        params: dict[str, Any] = {"job_id": job_id, "reason": reason or DEFAULT_REASON, "source": "mcp"}
        for key, value in (("memory", memory), ("runtime", runtime), ("num_cpus", num_cpus)):
            if value is not None:
                params[key] = value
        return self.call("jobs.update_resources", params)

    def recover_workflow(
        self,
        workflow_id: int,
        dry_run: bool = True,
        memory_multiplier: float = 1.5,
        runtime_multiplier: float = 1.4,
        retry_unknown: bool = False,
        reason: Reason | None = None,
    ) -> dict[str, Any]:
        """Give failed or pending_failed jobs that ran out of memory or time more (memory: what they
        used times the multiplier; runtime: theirs times the multiplier) and run them and what they
        block again; a pending_failed one retried so is classified (source mcp, with the reason).
        retry_unknown: also the others, as they were. ALWAYS call with dry_run true first (the
        default: it changes nothing), show the plan, and only then dry_run false. The workflow
        must have nothing running."""
        return msgspec.to_builtins(
            self.call(
                "workflows.recover",
                {
                    "workflow_id": workflow_id,
                    "dry_run": dry_run,
                    "memory_multiplier": memory_multiplier,
                    "runtime_multiplier": runtime_multiplier,
                    "retry_unknown": retry_unknown,
                    "source": "mcp",
                    "reason": reason or DEFAULT_REASON,
                },
            )
        )

    def get_slurm_sacct(self, workflow_id: int) -> dict[str, Any]:
        """Slurm's accounting for every allocation of the workflow and each of its steps (jobs
        run as srun steps, and the workers): state, exit code, elapsed seconds, peak memory (max
        RSS), CPU seconds and nodes, with the walltime the allocations consumed in all. For
        HPC resource use and for failures Slurm saw (TIMEOUT, OUT_OF_MEMORY, NODE_FAIL)."""
        ids = [
            a.slurm_job_id for a in self.call("allocations.list", {"workflow_id": workflow_id}, list[AllocationInfo])
        ]
        try:
            return sacct_report(workflow_id, [i for i in ids if i])
        except SacctUnavailable as e:
            raise ToolError(str(e)) from None

    def list_pending_failed_jobs(self, workflow_id: int) -> list[PendingFailedJob]:
        """The workflow's jobs waiting for a decision: id, name, attempt, return code, the failure
        handler's reason for parking it, and the last lines of its stderr. Transient causes
        (lost node, network, I/O, preemption) call for retry; bugs (syntax, import, bad input,
        assertion) for fail."""
        jobs = self.call("jobs.list", {"workflow_id": workflow_id, "status": "pending_failed"}, list[JobInfo])
        return [
            PendingFailedJob(
                job_id=j.id,
                name=j.name,
                attempt=j.attempt_id,
                return_code=j.return_code,
                command=j.command,
                failure_handler=j.failure_handler,
                reason=j.reason,
                stderr_tail=j.stderr_tail or "",
            )
            for j in jobs
        ]

    def classify_and_resolve_failures(
        self, workflow_id: int, classifications: list[Classification], dry_run: bool = True
    ) -> dict[str, Any]:
        """Retry or fail pending_failed jobs of the workflow, each with its reason; a retry may
        set new memory and runtime limits. dry_run true (the default) checks every
        classification and reports what would change, changing nothing; call it first, show the
        user, then call with dry_run false. All are applied or none: an unknown job, or one that
        is not pending_failed, changes nothing."""
        from torcctl.mcp.classify import apply_classifications, check_classifications

        jobs = check_classifications(self.call, workflow_id, classifications)
        if dry_run:
            return _classify_report(workflow_id, classifications, jobs, "would_apply", [], [])
        retried, failed = apply_classifications(self.call, workflow_id, classifications, DEFAULT_REASON)
        return _classify_report(workflow_id, classifications, jobs, "applied", retried, failed)

    def _report(self, fn, *args, **kwargs):
        try:
            return fn(self.client, *args, **kwargs)
        except RpcError as e:
            raise ToolError(e.message) from None
        except ValueError as e:
            raise ToolError(str(e)) from None


TOOLS = (
    "create_workflow",
    "get_execution_plan",
    "get_job_details",
    "list_jobs_by_status",
    "list_jobs",
    "get_workflow_status",
    "get_workflow_summary",
    "list_results",
    "get_results",
    "analyze_workflow_logs",
    "get_job_logs",
    "list_failed_jobs",
    "check_resource_utilization",
    "update_job_resources",
    "recover_workflow",
    "list_pending_failed_jobs",
    "classify_and_resolve_failures",
    "get_slurm_sacct",
)


def build_server(client: Client) -> MCPServer:
    tools = TorcTools(client)
    return MCPServer(
        "torc",
        instructions=INSTRUCTIONS,
        tools=[_refusing_unknown_arguments(Tool.from_function(getattr(tools, name))) for name in TOOLS],
    )


def _refusing_unknown_arguments(tool: Tool) -> Tool:
    """The SDK's argument model ignores names it does not know; a misspelled `dry_run` must not
    turn a preview into a change, so each tool's model forbids them (and says so in its schema)."""
    loose = tool.fn_metadata.arg_model
    strict: type[BaseModel] = type(
        loose.__name__,
        (loose,),
        {"model_config": ConfigDict(extra="forbid", arbitrary_types_allowed=True), "__module__": __name__},
    )
    metadata = tool.fn_metadata.model_copy(update={"arg_model": strict})
    return tool.model_copy(update={"fn_metadata": metadata, "parameters": strict.model_json_schema(by_alias=True)})


def _classify_report(
    workflow_id: int,
    classifications: list[Classification],
    jobs: dict[int, JobInfo],
    status: str,
    retried: list[int],
    failed: list[int],
) -> dict[str, Any]:
    dry_run = status == "would_apply"
    return {
        "workflow_id": workflow_id,
        "dry_run": dry_run,
        "total_classifications": len(classifications),
        "jobs_to_retry": sum(c.action == "retry" for c in classifications),
        "jobs_to_fail": sum(c.action == "fail" for c in classifications),
        "results": [
            {
                "job_id": c.job_id,
                "job_name": jobs[c.job_id].name,
                "action": c.action,
                "memory_adjustment": c.memory,
                "runtime_adjustment": c.runtime,
                "reason": c.reason or DEFAULT_REASON,
                "status": status,
            }
            for c in classifications
        ],
        "retried": retried,
        "failed": failed,
        "next_steps": (
            "Nothing was changed. If these look right, call again with dry_run false to apply them."
            if dry_run
            else "Applied: retried jobs run again as a new attempt; failed ones cancel the jobs that depend on them."
        ),
    }


def _log_tail(job_id: int, a: AttemptInfo, log_type: str, tail_lines: int | None) -> dict[str, Any]:
    path = a.stderr_path if log_type == "stderr" else a.stdout_path
    if not path:
        raise ToolError(f"job {job_id}'s {log_type} is not kept: its stdio mode sends it to /dev/null")
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
    shown = lines[-(tail_lines or MAX_TAIL_LINES) :]
    # truncated: less than was asked for (all of the log, by default)
    cut = start > 0 or len(shown) < len(lines) if tail_lines is None else start > 0 and len(shown) < tail_lines
    return {
        "job_id": job_id,
        "run_id": a.run_id,
        "attempt_id": a.attempt_id,
        "log_type": log_type,
        "path": path,
        "text": b"".join(shown).decode(errors="replace"),
        "truncated": cut,
    }


def _log_report(workflow_id: int, scan: LogScan, attempts: list[AttemptInfo], unreadable: list[str]) -> dict[str, Any]:
    recorded: dict[str, int] = {}
    for a in attempts:
        if a.cause:
            recorded[a.cause] = recorded.get(a.cause, 0) + 1
    out: dict[str, Any] = {
        "workflow_id": workflow_id,
        "summary": (
            f"Found {scan.error_count} error(s) and {scan.warning_count} warning(s) across "
            f"{scan.files_parsed} log files."
            if scan.error_count or scan.warning_count
            else "No errors or warnings detected in log files."
        ),
        "files_parsed": scan.files_parsed,
        "error_count": scan.error_count,
        "warning_count": scan.warning_count,
        "errors_by_type": [{"type": k, "count": n} for k, n in sorted(scan.by_kind.items())],
        "sample_errors": scan.samples,
        "files_with_errors": scan.files_with_errors,
        "causes_recorded_by_torcd": recorded,
        "unreadable_logs": unreadable,
    }
    oom = scan.by_kind.get("oom", 0) + scan.by_kind.get("memory_allocation_failed", 0) + recorded.get("oom", 0)
    timeout = scan.by_kind.get("timeout", 0) + scan.by_kind.get("time_limit", 0) + recorded.get("timeout", 0)
    if oom or timeout:
        out["recovery"] = {
            "oom_errors": oom,
            "timeout_errors": timeout,
            "recommendation": "Out of memory or time: recover_workflow can give these jobs more and run them "
            "again. Call it with dry_run true first, show the plan, and apply it only once "
            "the user agrees.",
            "tool_call_example": {
                "tool": "recover_workflow",
                "parameters": {
                    "workflow_id": workflow_id,
                    "dry_run": True,
                    "memory_multiplier": 1.5,
                    "runtime_multiplier": 1.4,
                },
            },
        }
    return out


def serve(client: Client) -> int:
    build_server(client).run("stdio")
    return 0
