"""Where the daemon's socket and state live (flags > environment > XDG defaults)."""

from __future__ import annotations

import os

import msgspec


class Paths(msgspec.Struct, frozen=True):
    socket: str
    state_dir: str


def default_socket() -> str:
    env = os.environ.get("TORCD_SOCKET")
    if env:
        return os.path.abspath(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return os.path.join(runtime, "torcd", "torcd.sock")
    return f"/tmp/torcd-{os.getuid()}/torcd.sock"


def default_state_dir() -> str:
    env = os.environ.get("TORCD_STATE_DIR")
    if env:
        return os.path.abspath(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "torcd")


def resolve(socket: str | None = None, state_dir: str | None = None) -> Paths:
    return Paths(
        os.path.abspath(socket) if socket else default_socket(),
        os.path.abspath(state_dir) if state_dir else default_state_dir(),
    )
