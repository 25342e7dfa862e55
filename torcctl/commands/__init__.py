"""One function per torcctl command, in a module per family (workflows, jobs, following a workflow,
servers): each calls the daemon and renders the answer. What they all use lives here."""

from __future__ import annotations

import os

from torcctl.api.client import Client, Workflow

STATUS_ORDER = [
    "uninitialized",
    "blocked",
    "ready",
    "pending",
    "running",
    "recovering",
    "completed",
    "failed",
    "canceled",
    "terminated",
    "disabled",
    "pending_failed",
]


class UsageError(Exception):
    pass


MAX_SPEC_BYTES = 64 * 1024 * 1024  # what the daemon accepts in workflows.create


def read_spec(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_SPEC_BYTES + 1)  # a spec pointed at /dev/zero must not fill memory
    except OSError as e:
        raise UsageError(f"cannot read spec {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"spec {path} is not UTF-8 text: {e}") from None
    if len(text) > MAX_SPEC_BYTES:
        raise UsageError(f"spec {path} is larger than {MAX_SPEC_BYTES // 2**20} MiB")
    return text


def current_dir() -> str:
    try:
        return os.getcwd()
    except FileNotFoundError:
        raise UsageError("the current directory no longer exists (it was deleted); cd to one that does") from None


def spec_params(args) -> dict:
    """What the daemon needs to read a spec: its text, its name (for errors) and its format."""
    return {
        "spec_text": read_spec(args.spec),
        "spec_path": args.spec,
        **({"spec_format": args.spec_format} if getattr(args, "spec_format", None) else {}),
    }


def create_workflow(client: Client, args, **extra) -> Workflow:
    """The spec's text as read here (so that a path's errors are the CLI's), created by the daemon."""
    cwd = current_dir()
    return client.call("workflows.create", {**spec_params(args), "cwd": cwd, **extra}, Workflow)
