"""`torcctl slurm generate` (Torc's): a spec's Slurm schedulers made from an HPC profile, one per
resource requirement its jobs use, each in the partition that suits it best (`matching`).

The spec is read and checked as the daemon would; the result is the same spec (as a plain tree)
with `slurm_schedulers`, each job's `scheduler`, and an `on_workflow_start` `schedule_nodes`
action for each scheduler some job of which can start at once (with `dynamic_jobs`, every
requirement gets a scheduler, for the jobs added as it runs). Schedulers whose jobs all wait
for others, or that have none yet, get no action: `torcctl watch WF --auto-schedule` asks for their allocations when
their jobs become ready, rather than holding idle nodes from the start.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import msgspec

from torcctl.hpc.profiles import Need, Partition, Profile, matching, walltime
from torcd.core.resources import parse_duration, parse_memory
from torcd.spec.parse import Workflow

DEFAULT_GROUP = "default"  # the jobs that name no resource requirement
# An allocation's walltime: its jobs' runtime, a tenth more and two minutes (within the partition's limit).
RUNTIME_HEADROOM, HEADROOM_SECONDS = 1.1, 120.0


class GenerateError(Exception):
    """Why schedulers cannot be made for this spec (a sentence naming the job or requirement)."""


class Generated(msgspec.Struct):
    tree: dict[str, Any]
    chosen: dict[str, str]  # scheduler -> partition
    later: list[str]  # schedulers whose jobs all wait for others (no action)


def generate(
    tree: Mapping[str, Any],
    parsed: Workflow,
    profile: Profile,
    account: str,
    *,
    actions: bool = True,
    force: bool = False,
) -> Generated:
    """The spec `tree` (checked as `parsed`) with schedulers from `profile` on `account`."""
    if tree.get("slurm_schedulers") and not force:
        raise GenerateError("the spec has slurm_schedulers already: give --force to replace them")
    out = copy.deepcopy(dict(tree))
    requirements = {r.get("name"): r for r in out.get("resource_requirements") or [] if isinstance(r, dict)}
    groups: dict[str, Need] = {}
    group_of: dict[str, str] = {}  # job (as written) -> group
    for job in out.get("jobs") or []:
        name = job.get("resource_requirements")
        if name is None:
            cpus = job.get("num_cpus", 1)
            group = DEFAULT_GROUP if cpus == 1 else f"cpus_{cpus}"
            groups[group] = Need(cpus=int(cpus))
        else:
            group = str(name)
            groups[group] = _need(group, requirements.get(name) or {})
        group_of[job["name"]] = group
    if "dynamic_jobs" in out:  # jobs added as it runs name the spec's other requirements too
        for name, entry in requirements.items():
            if isinstance(name, str) and name not in groups:
                groups[name] = _need(name, entry)
    schedulers, chosen = [], {}
    for group, need in groups.items():
        found = matching(profile, need)
        if not found:
            raise GenerateError(f"no partition of {profile.name} fits resource requirement {group!r} ({_said(need)})")
        name = f"{group}_scheduler"
        schedulers.append(_scheduler(name, found[0], need, account))
        chosen[name] = found[0].name
    out["slurm_schedulers"] = schedulers
    out.pop("default_scheduler", None)
    for job in out.get("jobs") or []:
        job["scheduler"] = f"{group_of[job['name']]}_scheduler"
    # A job as written is found by its name before parameters (its template), or as it is.
    found_groups = [group_of.get(j.template) or group_of.get(j.name) for j in parsed.jobs if not j.depends_on]
    if any(g is None for g in found_groups):  # a name made by variables: take every one as starting
        found_groups = list(groups)
    starting = {f"{g}_scheduler" for g in found_groups}
    later = [s["name"] for s in schedulers if s["name"] not in starting]
    if actions:
        kept = [
            a
            for a in out.get("actions") or []
            if not (force and isinstance(a, dict) and a.get("action_type") == "schedule_nodes")
        ]
        kept += [
            {
                "trigger_type": "on_workflow_start",
                "action_type": "schedule_nodes",
                "scheduler": s["name"],
                "scheduler_type": "slurm",
                "num_allocations": 1,
            }
            for s in schedulers
            if s["name"] in starting
        ]
        out["actions"] = kept
    return Generated(out, chosen, later)


def _need(name: str, entry: Mapping[str, Any]) -> Need:
    try:
        memory = entry.get("memory")
        runtime = entry.get("runtime")
        return Need(
            cpus=int(entry.get("num_cpus", 1)),
            memory_bytes=None if memory is None else (memory if isinstance(memory, int) else parse_memory(str(memory))),
            runtime_seconds=None if runtime is None else parse_duration(str(runtime)),
            gpus=int(entry.get("num_gpus", 0)),
            nodes=int(entry.get("num_nodes", 1)),
        )
    except (TypeError, ValueError) as e:
        raise GenerateError(
            f"resource requirement {name!r}: {e} (give plain values: schedulers are made before variables are filled)"
        ) from None


def _scheduler(name: str, partition: Partition, need: Need, account: str) -> dict[str, Any]:
    """A scheduler for jobs of this need in this partition: whole nodes (their shape given, so
    the daemon packs jobs into them), or on a shared partition just what one job needs."""
    if need.runtime_seconds is None:
        seconds = float(partition.max_walltime_secs)
    else:  # workers take no job near the walltime's end (the expiration buffer): leave room for it
        seconds = need.runtime_seconds * RUNTIME_HEADROOM + HEADROOM_SECONDS
    out: dict[str, Any] = {
        "name": name,
        "account": account,
        "partition": partition.name,
        "walltime": walltime(min(seconds, partition.max_walltime_secs)),
        "nodes": max(need.nodes, partition.min_nodes),
    }
    if partition.shared:
        out["cpus"] = need.cpus
        if need.memory_bytes:
            out["mem"] = f"{-(-need.memory_bytes // (1024 * 1024))}M"
    else:
        out.update(node_cpus=partition.cpus_per_node, node_memory=f"{partition.memory_mb}m")
    if need.gpus:
        out["gres"] = f"gpu:{need.gpus if partition.shared else partition.gpus_per_node}"
    return out


def _said(need: Need) -> str:
    parts = [f"{need.cpus} CPUs"]
    if need.memory_bytes:
        parts.append(f"{need.memory_bytes / 2**30:.1f} GiB")
    if need.gpus:
        parts.append(f"{need.gpus} GPUs")
    if need.runtime_seconds:
        parts.append(f"runtime {walltime(need.runtime_seconds)}")
    if need.nodes > 1:
        parts.append(f"{need.nodes} nodes")
    return ", ".join(parts)
