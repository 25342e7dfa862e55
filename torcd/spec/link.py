"""Linking a workflow's expanded jobs into one graph: `depends_on_regexes` matched, readers
made to depend on writers, every dependency checked to exist, and no cycle."""

from __future__ import annotations

from itertools import pairwise

from torcd.core import params as P
from torcd.core.graph import find_cycle
from torcd.spec.data import JobFiles, Matcher, dataset_edges, producer_edges
from torcd.spec.load import Locator
from torcd.spec.schema import MAX_DEPENDENCIES, ExpandedJob


def link(
    jobs: list[ExpandedJob],
    origin: dict[str, int],
    regexes: list[tuple[ExpandedJob, int, list[str]]],
    matcher: Matcher,
    loc: Locator,
) -> None:
    """Complete each job's depends_on, in place; SpecError at the first dependency that is wrong."""
    if regexes:
        _match_regexes(jobs, regexes, matcher, loc)
    deps, via = producer_edges(
        [(j.name, JobFiles(j.inputs, j.outputs)) for j in jobs if j.inputs or j.outputs], origin, "file", loc
    )
    data_deps, data_via = producer_edges(
        [(j.name, JobFiles(j.data_inputs, j.data_outputs)) for j in jobs if j.data_inputs or j.data_outputs],
        origin,
        "user_data",
        loc,
    )
    set_deps, set_via = dataset_edges(
        [
            (j.name, JobFiles(j.dataset_inputs, j.dataset_outputs))
            for j in jobs
            if j.dataset_inputs or j.dataset_outputs
        ],
        origin,
        MAX_DEPENDENCIES,
        loc,
    )
    via.update({k: v for k, v in data_via.items() if k not in via})
    via.update({k: v for k, v in set_via.items() if k not in via})
    for j in jobs:
        if j.name in deps or j.name in data_deps or j.name in set_deps:
            more = deps.get(j.name, []) + data_deps.get(j.name, []) + set_deps.get(j.name, [])
            j.depends_on = list(dict.fromkeys(j.depends_on + more))
    _check_names(jobs, origin, loc, via)


def _match_regexes(
    jobs: list[ExpandedJob], regexes: list[tuple[ExpandedJob, int, list[str]]], matcher: Matcher, loc: Locator
) -> None:
    """Add the jobs each `depends_on_regexes` entry matches (searched anywhere in the name, as
    Torc does) to the job's dependencies; a regex matching no other job is an error."""
    names = [j.name for j in jobs]
    edges = sum(len(j.depends_on) for j in jobs)
    for job, j, patterns in regexes:
        deps = dict.fromkeys(job.depends_on)
        for k, pattern in enumerate(patterns):
            at = f"$.jobs[{j}].depends_on_regexes[{k}]"
            matched = [n for n in matcher.search(pattern, names, at) if n != job.name]
            if not matched:
                raise loc.error(f"depends_on_regexes entry {pattern!r} of job {job.name!r} matches no other job", at)
            deps.update(dict.fromkeys(matched))
            edges += len(matched)
            if edges > MAX_DEPENDENCIES:
                raise loc.error(f"depends_on_regexes make more than {MAX_DEPENDENCIES:,} dependencies", at)
        job.depends_on = list(deps)


def _check_names(
    jobs: list[ExpandedJob], origin: dict[str, int], loc: Locator, via: dict[tuple[str, str], str]
) -> None:
    seen = origin.keys()
    for job in jobs:
        for dep in job.depends_on:
            if dep not in seen:
                j = origin[job.name]
                unfilled = P.placeholders(dep)
                hint = f" (no parameter for {', '.join(sorted(unfilled))})" if unfilled else ""
                raise loc.error(
                    f"job {job.name!r} depends on {dep!r}, which does not exist{hint}", f"$.jobs[{j}].depends_on"
                )
            if dep == job.name:
                raise loc.error(f"job {job.name!r} depends on itself", f"$.jobs[{origin[job.name]}].depends_on")
    cycle = find_cycle({job.name: job.depends_on for job in jobs})
    if cycle:
        steps = [cycle[0]] + [f"{v} (writes {via[u, v]!r})" if (u, v) in via else v for u, v in pairwise(cycle)]
        raise loc.error("dependency cycle: " + " -> ".join(steps), f"$.jobs[{origin[cycle[0]]}].depends_on")


def sort_claims(jobs: list[ExpandedJob], method: str) -> None:
    """Number the jobs in the order they are claimed when ready together: the highest priority
    first; among equals, by `method` (the most GPUs, then the longest runtime and the most
    memory, or memory, then runtime) or, with `none`, as written."""

    def key(j: ExpandedJob) -> tuple:
        runtime, memory = -(j.runtime_seconds or 0), -(j.memory_bytes or 0)
        if method == "none":
            return (-j.priority,)
        if method == "gpus_runtime_memory":
            return (-j.priority, -j.num_gpus, runtime, memory)
        return (-j.priority, -j.num_gpus, memory, runtime)

    for rank, job in enumerate(sorted(jobs, key=key)):
        job.claim_order = rank
