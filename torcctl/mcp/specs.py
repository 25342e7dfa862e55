"""Specs given to the MCP tools `create_workflow` and `get_execution_plan`: checked as
`torcctl validate` checks them, every error a tool error naming its line and field."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from torcd.protocol import WorkflowSummary

SPEC_NAME = "spec_json"  # errors read `spec_json:LINE: message (at $.jobs[0].command)`


def parse_for_tool(text: str, name: str = SPEC_NAME):
    """The spec validated and expanded; ToolError listing every error (up to 50) otherwise."""
    from torcd.errors import SpecError
    from torcd.spec.errors import spec_errors
    from torcd.spec.parse import parse_spec

    try:
        return parse_spec(text, name)
    except SpecError as e:
        errors = spec_errors(text, name) or [e]
        raise ToolError(
            f"the spec has {len(errors)} error(s); nothing was saved or created:\n"
            + "\n".join(x.message for x in errors)
        ) from None


def create_workflow(
    call: Callable[..., Any],
    spec_json: str,
    action: str,
    workflow_type: str,
    user: str | None,
    account: str | None,
    hpc_profile: str | None,
    output_path: str | None,
) -> dict[str, Any]:
    if hpc_profile is not None:
        raise ToolError("torc-py has no HPC profiles: write the Slurm settings in the spec's slurm_schedulers")
    me = getpass.getuser()
    if user is not None and user != me:
        raise ToolError(f"this daemon is {me}'s: it creates workflows for {me} only, not {user}")
    if workflow_type == "slurm" and account is None and action != "validate":
        return {
            "status": "need_input",
            "message": "Slurm workflows need an account for their allocations.",
            "action_required": "Ask the user which Slurm account to use, then call this tool again with account set.",
        }
    if action == "save_spec_file" and not output_path:
        raise ToolError("output_path is required for action save_spec_file")
    spec = parse_for_tool(spec_json)
    from torcd.spec.lint import lint_spec

    warnings = [
        {"line": f.line, "field": f.field, "message": f.message} for f in lint_spec(spec_json, SPEC_NAME, os.getcwd())
    ]
    if action == "validate":
        return {
            "valid": True,
            "workflow_name": spec.name,
            "jobs": len(spec.jobs),
            "warnings": warnings,
            "message": "The spec is valid; nothing was saved or created.",
        }
    if action == "save_spec_file":
        assert output_path  # checked above
        return {
            "success": True,
            "output_path": _save(spec_json, output_path),
            "warnings": warnings,
            "message": f"Saved workflow spec {spec.name!r}: edit its commands, then run it with "
            f"`torcctl run {output_path}`"
            + (" (`torcctl submit-slurm` for Slurm)." if workflow_type == "slurm" else "."),
        }
    params: dict[str, Any] = {
        "spec_text": spec_json,
        "spec_path": SPEC_NAME,
        "cwd": os.getcwd(),
        "executor": workflow_type,
    }
    if workflow_type == "slurm":
        params["account"] = account
    info = call("workflows.create", params, WorkflowSummary)
    return {
        "success": True,
        "workflow_id": info.id,
        "warnings": warnings,
        "message": f"Created {workflow_type} workflow {info.name!r} with id {info.id}; torcd runs its jobs now.",
    }


def _save(text: str, output_path: str) -> str:
    """Write the spec (JSON pretty-printed; any other format as given), never over a file."""
    path = os.path.abspath(output_path)
    try:
        text = json.dumps(json.loads(text), indent=2) + "\n"
    except ValueError:
        pass
    try:
        with open(path, "x") as f:
            f.write(text)
    except FileExistsError:
        raise ToolError(f"{path} exists; choose another output_path (nothing was written)") from None
    except OSError as e:
        raise ToolError(f"cannot write {path}: {e.strerror}") from None
    return path
