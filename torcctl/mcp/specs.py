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
    if hpc_profile is not None:
        if workflow_type != "slurm":
            raise ToolError("hpc_profile makes Slurm schedulers: give workflow_type slurm with it")
        spec_json = with_schedulers(spec_json, hpc_profile, account)
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


def with_schedulers(spec_json: str, profile_name: str, account: str | None) -> str:
    """The spec (JSON) with a Slurm scheduler per resource requirement from an HPC profile, as
    `torcctl slurm generate` makes them (Torc's `hpc_profile`)."""
    import copy

    from torcctl.hpc import catalog
    from torcctl.hpc.generate import GenerateError, generate
    from torcd.errors import SpecError
    from torcd.spec.parse import load_plain, parse_tree

    try:
        profile = catalog.find(profile_name)
    except catalog.ProfileError as e:
        raise ToolError(f"hpc_profile: {e}") from None
    try:
        tree, loc = load_plain(spec_json, SPEC_NAME)
        written = copy.deepcopy(tree)
        parsed = parse_tree(tree, loc)
    except SpecError:
        parse_for_tool(spec_json)  # raises, with every error
        raise
    # Validating only: an account is not needed yet (a placeholder stands for it).
    chosen = account or profile.default_account or "ACCOUNT"
    try:
        made = generate(written, parsed, profile, chosen, force=False)
    except GenerateError as e:
        raise ToolError(f"hpc_profile {profile.name}: {e}") from None
    return json.dumps(made.tree, indent=2)


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
