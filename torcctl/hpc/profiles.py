"""HPC profiles (Torc's): a cluster's partitions and how to recognise it, and which partition
suits a job, as pure functions over data.

A profile is written as Torc writes a custom one in its config file (`display_name`,
`detect_env_var`, `detect_hostname`, `default_account`, `[[partitions]]` with `name`,
`cpus_per_node`, `memory_mb`, `max_walltime_secs`, `gpus_per_node`, `gpu_type`, `shared`,
`min_nodes`, `requires_explicit_request`, `description`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

Positive = Annotated[int, Meta(ge=1, le=10**9)]


class Partition(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,128}\Z")]
    cpus_per_node: Positive
    memory_mb: Positive
    max_walltime_secs: Positive
    gpus_per_node: Annotated[int, Meta(ge=0, le=1024)] = 0
    gpu_type: str | None = None
    shared: bool = False
    min_nodes: Positive = 1
    requires_explicit_request: bool = False
    description: str = ""

    @property
    def is_debug(self) -> bool:
        return "debug" in self.name.lower()


class Profile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    name: str
    partitions: Annotated[list[Partition], Meta(min_length=1)]
    display_name: str = ""
    description: str = ""
    detect_env_var: str | None = None  # NAME=value
    detect_hostname: str | None = None  # a regular expression the whole host name matches
    default_account: str | None = None


class Need(msgspec.Struct, frozen=True):
    """What one job (or a group of jobs with one resource requirement) needs of a node."""

    cpus: int = 1
    memory_bytes: int | None = None
    runtime_seconds: float | None = None
    gpus: int = 0
    nodes: int = 1


def profile_of(name: str, table: Mapping[str, Any]) -> Profile:
    """A profile from its TOML table (msgspec.ValidationError naming the field if it is wrong)."""
    return msgspec.convert({**table, "name": name}, Profile)


def detected(profile: Profile, env: Mapping[str, str], hostname: str) -> bool:
    """Whether this machine is on `profile`'s cluster (its variable is set, or its host name matches)."""
    if profile.detect_env_var:
        key, _, value = profile.detect_env_var.partition("=")
        if key and env.get(key) == value:
            return True
    if profile.detect_hostname:
        try:
            return re.fullmatch(profile.detect_hostname, hostname) is not None
        except re.error:
            return False
    return False


def matching(profile: Profile, need: Need, explicit: str | None = None) -> list[Partition]:
    """The partitions a job could run in, best first: each node holds what it needs and the
    walltime its runtime; a job with GPUs goes only where there are GPUs, one without prefers
    where there are none; a debug partition only when nothing else fits; a partition that must
    be asked for by name only when it is (`explicit`). Then the smallest that fits: least
    memory, shortest walltime, whole nodes before shared ones, fewest CPUs."""
    fits = [
        p
        for p in profile.partitions
        if p.cpus_per_node >= need.cpus
        and p.memory_mb * 1024 * 1024 >= (need.memory_bytes or 0)
        and p.gpus_per_node >= need.gpus
        and p.max_walltime_secs >= (need.runtime_seconds or 0)
        and need.nodes >= p.min_nodes
        and (not p.requires_explicit_request or p.name == explicit)
    ]
    if explicit is not None:
        return [p for p in fits if p.name == explicit]
    if any(not p.is_debug for p in fits):
        fits = [p for p in fits if not p.is_debug]
    return sorted(
        fits,
        key=lambda p: (
            need.gpus == 0 and p.gpus_per_node > 0,
            p.memory_mb,
            p.max_walltime_secs,
            p.shared,
            p.cpus_per_node,
            p.name,
        ),
    )


def walltime(seconds: float) -> str:
    """Slurm's `D-HH:MM:SS` (HH:MM:SS under a day) for a runtime, rounded up to the minute."""
    minutes = max(1, -(-int(seconds) // 60))
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def format_walltime(seconds: int) -> str:
    """A partition's time limit as people read it: 1h, 48h, 10d."""
    if seconds % 86400 == 0 and seconds >= 10 * 86400:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
