"""Jobs a running job adds to its own workflow (Torc's `spawn_jobs`), as pure decisions: which
name a lineage may have, what a spawn request becomes as a spec fragment, where its state is
recorded, and how fast a workflow may spawn.

A lineage is one run of an orchestrator and its continuations; each call that adds jobs is one
iteration of it, capped by the workflow's `dynamic_jobs.max_iterations`. Its state is kept, as
Torc keeps it, in user data named `__torc_lineage__<lineage>__g<iteration, 6 digits>`, and the
state given with the call that adds nothing (convergence) in `__torc_lineage__<lineage>__final`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from msgspec import Meta

DEFAULT_MAX_ITERATIONS = 1000  # Torc's server default
MAX_SPAWN_JOBS = 10_000  # in one call
MAX_STATE_BYTES = 64 * 1024  # of one call's state, as JSON: a counter and a path, not the data
LINEAGE_RECORD_PREFIX = "__torc_lineage__"
LINEAGE_ENV = "TORC_ORCHESTRATOR_LINEAGE_ID"
GENERATION_ENV = "TORC_ORCHESTRATOR_GENERATION"  # the iteration of its lineage that added the job
# A lineage goes into user data names and a job's environment: a plain word, no `__` (it would
# make one lineage's record names look like another's).
_LINEAGE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]|_(?!_)){0,199}")


Text = Annotated[str, Meta(min_length=1)]


class Spawning(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a workflow keeps from its spec for the jobs its jobs will add: the iteration cap, the
    workflow-level `env`, and its `resource_requirements` as written (spawned jobs name them)."""

    max_iterations: int = DEFAULT_MAX_ITERATIONS
    env: dict[str, str] = {}
    resource_requirements: list[dict[str, Any]] = []
    stdio: dict[str, Any] | None = None  # the workflow's execution_config.stdio, as written


class SpawnJob(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """One job to add (Torc's SpawnJobModel, plus the failure handler and scheduler to give it,
    each one the workflow has)."""

    name: Text
    command: Text
    depends_on: list[Text] | None = None  # jobs of the workflow, or of the same call
    resource_requirements: Text | None = None  # one the workflow's spec declares
    priority: int | None = None
    cancel_on_blocking_job_failure: bool | None = None
    failure_handler: Text | None = None  # one the workflow has
    scheduler: Text | None = None  # one the workflow has (on Slurm; default: the calling job's)


def lineage_problem(lineage: str) -> str | None:
    """Why `lineage` cannot name a lineage (None: it can)."""
    if _LINEAGE.fullmatch(lineage):
        return None
    return (
        f"lineage {lineage!r} is not a plain name: 1 to 200 letters, digits, '.', '-' or single '_', "
        "starting with a letter or digit"
    )


def record_name(lineage: str, iteration: int | None) -> str:
    """The user data entry holding a lineage's state after `iteration` (None: the final one)."""
    tail = "final" if iteration is None else f"g{iteration:06d}"
    return f"{LINEAGE_RECORD_PREFIX}{lineage}__{tail}"


def cap_problem(lineage: str, iterations: int, max_iterations: int) -> str | None:
    """Why one more iteration of a lineage that has had `iterations` is refused (None: it is not)."""
    if iterations < max_iterations:
        return None
    return (
        f"lineage {lineage!r} has had {iterations} iterations, the most dynamic_jobs.max_iterations "
        f"({max_iterations}) allows: nothing was added"
    )


def fragment(jobs: Sequence[SpawnJob], spawning: Spawning, lineage: str) -> dict[str, Any]:
    """The spec fragment the spawned jobs are read from (by the spec parser, as any jobs are):
    the workflow's env and the resource requirements they name, and each job with the lineage in
    its environment; `depends_on` keeps only the jobs of the same call (the others are the
    workflow's: `outside_dependencies`)."""
    siblings = {j.name for j in jobs}
    named = {j.resource_requirements for j in jobs if j.resource_requirements is not None}
    doc: dict[str, Any] = {
        "name": "spawned",
        "jobs": [_job(j, lineage, siblings) for j in jobs],
        "resource_requirements": [r for r in spawning.resource_requirements if r.get("name") in named],
    }
    if spawning.env:
        doc["env"] = spawning.env
    return doc


def _job(job: SpawnJob, lineage: str, siblings: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": job.name, "command": job.command, "env": {LINEAGE_ENV: lineage}}
    if within := [d for d in job.depends_on or () if d in siblings]:
        out["depends_on"] = within
    for key in ("resource_requirements", "priority"):  # a handler and a scheduler are the workflow's
        if (value := getattr(job, key)) is not None:
            out[key] = value
    if job.cancel_on_blocking_job_failure is not None:
        out["cancel_on_blocking_job_failure"] = job.cancel_on_blocking_job_failure
    return out


def outside_dependencies(jobs: Sequence[SpawnJob]) -> dict[str, list[str]]:
    """Each spawned job's dependencies on jobs the workflow has already (by name), for those
    that have any."""
    siblings = {j.name for j in jobs}
    outside = {j.name: [d for d in dict.fromkeys(j.depends_on or ()) if d not in siblings] for j in jobs}
    return {name: deps for name, deps in outside.items() if deps}


class SpawnRate(msgspec.Struct):
    """How fast one workflow's jobs may call spawn_jobs: a bucket of `burst` calls that refills at
    `per_second` (a loop that spawns on every pass cannot flood the store)."""

    burst: float = 50.0
    per_second: float = 10.0
    tokens: float = 50.0
    at: float | None = None

    def take(self, now: float) -> float | None:
        """Spend one call at `now`; None if allowed, else the seconds until one would be."""
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.per_second


def spawning_of(raw: str | None) -> Spawning:
    """A workflow's spawning settings (a workflow made before they were kept has the defaults)."""
    return Spawning() if raw is None else msgspec.json.decode(raw, type=Spawning)
