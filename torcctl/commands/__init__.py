"""One function per torcctl command, in a module per family (workflows, jobs, following a workflow,
servers): each calls the daemon and renders the answer. What they all use lives here."""

from __future__ import annotations

import os

from torcctl.api.client import Client, Workflow
from torcctl.api.spec_files import read_spec_file

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


STDIN = "<stdin>"  # what a spec read from standard input (`-`) is called in messages
_from_stdin: dict[str, str] = {}


def take_spec_from_stdin(args) -> None:
    """`-` for the spec: read standard input once, and call the spec `<stdin>` from then on."""
    if getattr(args, "spec", None) != "-":
        return
    _from_stdin[STDIN] = stdin_text()
    args.spec = STDIN


def is_workflow_id(text: str) -> bool:
    """Whether a command's SPEC argument is a workflow's id (ASCII digits: `isdigit` takes ²)."""
    return text.isascii() and text.isdigit()


def stdin_text() -> str:
    """Standard input, read once, as a spec is (size-limited UTF-8 text)."""
    try:
        return read_spec_file("/dev/stdin", STDIN)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None


def remember_spec(name: str, text: str) -> None:
    """A spec made here (not a file), read back by `read_spec(name)`."""
    _from_stdin[name] = text


def read_spec(path: str) -> str:
    if path in _from_stdin:
        return _from_stdin[path]
    try:
        return read_spec_file(path)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None


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
