"""How many Slurm allocations, of what shape, to run a set of ready jobs: pure functions.

Each node of an allocation has a shape (CPUs, memory, GPUs) and the scheduler's walltime. A
job fits a node if its CPUs, memory and GPUs fit the shape and its runtime the walltime. Jobs
are packed first-fit decreasing by the node-seconds they need (CPU-seconds, and GPU-seconds
where they use GPUs; a job without a runtime is taken to need the whole walltime), so sixteen
1-CPU jobs become one 16-CPU node, not sixteen allocations.
"""

from __future__ import annotations

import math

import msgspec

from torcd.core.resources import Capacity, Requirements, format_bytes, format_duration, shortfalls


class NodeShape(msgspec.Struct, frozen=True):
    cpus: int
    memory: int | None = None  # bytes; None: not known, not checked
    gpus: int = 0


class JobNeed(msgspec.Struct, frozen=True):
    name: str
    cpus: int = 1
    memory: int | None = None
    gpus: int = 0
    runtime: float | None = None  # seconds; None: as long as the walltime allows


class SchedulerPlan(msgspec.Struct, frozen=True):
    scheduler: str
    node: NodeShape
    nodes_per_allocation: int
    allocations: int  # to submit now (within max_allocations, counting those already open)
    nodes: list[list[str]]  # the jobs packed on each node (all of them, even beyond `allocations`)
    refused: dict[str, str] = {}  # job -> why it fits no node of this scheduler


def misfit(job: JobNeed, node: NodeShape, walltime: float) -> str | None:
    """Why the job can never run on a node of this shape within this walltime, if it cannot."""
    short = shortfalls(
        Requirements(job.cpus, job.gpus, memory_bytes=job.memory, runtime_seconds=job.runtime),
        Capacity(node.cpus, node.memory, node.gpus, walltime),
    )
    if not short:
        return None
    return {
        "cpus": lambda: f"needs {job.cpus} CPUs; a node has {node.cpus}",
        "memory": lambda: (
            f"needs {format_bytes(job.memory or 0)} of memory; a node has {format_bytes(node.memory or 0)}"
        ),
        "gpus": lambda: f"needs {job.gpus} GPUs; a node has {node.gpus}",
        "runtime": lambda: (
            f"needs a runtime of {format_duration(job.runtime or 0)}; the walltime is {format_duration(walltime)}"
        ),
    }[short[0]]()


def pack(jobs: list[JobNeed], node: NodeShape, walltime: float, most: int | None = None) -> list[list[JobNeed]]:
    """Nodes filled first-fit decreasing by node-seconds (jobs that fit no node are left out);
    at most `most` nodes (the rest wait for the next plan), so a long queue costs no more than
    what can be submitted."""

    def seconds(j: JobNeed) -> float:
        return min(j.runtime if j.runtime is not None else walltime, walltime)

    fitting = [j for j in jobs if misfit(j, node, walltime) is None]
    fitting.sort(key=lambda j: (j.gpus * seconds(j), j.cpus * seconds(j), j.memory or 0), reverse=True)
    cpu_room, gpu_room = node.cpus * walltime, node.gpus * walltime
    bins: list[tuple[list[JobNeed], list[float]]] = []  # jobs, [cpu-seconds left, gpu-seconds left]
    for j in fitting:
        cpu, gpu = j.cpus * seconds(j), j.gpus * seconds(j)
        for placed, left in bins:
            if cpu <= left[0] + 1e-9 and gpu <= left[1] + 1e-9:
                placed.append(j)
                left[0] -= cpu
                left[1] -= gpu
                break
        else:
            if most is not None and len(bins) >= most:
                continue
            bins.append(([j], [cpu_room - cpu, gpu_room - gpu]))
    return [placed for placed, _ in bins]


def plan(
    scheduler: str,
    jobs: list[JobNeed],
    node: NodeShape,
    walltime: float,
    nodes_per_allocation: int,
    max_allocations: int,
    open_allocations: int,
) -> SchedulerPlan:
    """The allocations to submit now for these ready jobs."""
    refused = {j.name: why for j in jobs if (why := misfit(j, node, walltime)) is not None}
    room = max(0, max_allocations - open_allocations)
    nodes = pack(jobs, node, walltime, most=room * nodes_per_allocation)
    count = min(room, math.ceil(len(nodes) / nodes_per_allocation))
    return SchedulerPlan(scheduler, node, nodes_per_allocation, count, [[j.name for j in n] for n in nodes], refused)
