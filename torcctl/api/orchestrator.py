"""A job that adds jobs to its own workflow as it runs (Torc's dynamic jobs): the orchestrator
pattern, with Torc's `Orchestrator` and `SpawnJobModel` names so a Torc script ports by its import.

    from torcctl import Orchestrator, SpawnJob

    orch = Orchestrator.from_env(lineage_fallback=sys.argv[1])
    if done:
        orch.converge(state={"metric": m})
    else:
        orch.spawn([SpawnJob(name=f"work_{orch.generation + 1}", command="...")], state={"metric": m})

Each spawned job waits for the job that spawned it, so it starts once that job has ended; a
continuation of the orchestrator is one more spawned job (it inherits the lineage through
$TORC_ORCHESTRATOR_LINEAGE_ID).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from typing import Any

from torcctl.api.client import Client
from torcctl.errors import TooFast, TorcError
from torcd.core.spawning import GENERATION_ENV, LINEAGE_ENV, SpawnJob, record_name
from torcd.protocol import LineageInfo, Spawned

__all__ = ["LineageInfo", "Orchestrator", "SpawnJob", "SpawnJobModel", "Spawned", "spawn_jobs"]

SpawnJobModel = SpawnJob  # Torc's name for it
TOO_FAST_PATIENCE = 300.0  # seconds a call asked to slow down keeps asking


def spawn_jobs(
    client: Client, job_id: int, lineage: str, jobs: Sequence[SpawnJob], state: Any = None, wait: bool = True
) -> Spawned:
    """Add `jobs` for running job `job_id`, each waiting for it (no jobs: the lineage converged,
    and `state` is its final record). Asked to slow down, it waits as told, and a random part
    more (many orchestrators starting together would otherwise all ask again at once), for up
    to TOO_FAST_PATIENCE seconds (`wait=False`: raises TooFast at once)."""
    params = {"job_id": job_id, "lineage": lineage, "jobs": list(jobs), "state": state}
    deadline = time.monotonic() + TOO_FAST_PATIENCE
    while True:
        try:
            return client.call("jobs.spawn", params, Spawned)
        except TooFast as e:
            pause = max(e.retry_after, 0.05) * random.uniform(1.0, 4.0)
            if not wait or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)


class Orchestrator:
    """The running job's place in its lineage, and the calls that extend or end it."""

    def __init__(self, client: Client, workflow_id: int, job_id: int, lineage: str, generation: int = 0) -> None:
        self.client, self.workflow_id, self.job_id, self.lineage = client, workflow_id, job_id, lineage
        self.generation = generation
        """Which iteration of the lineage added this job (0: the seed, declared in the spec). A
        job's own, not the lineage's count so far: an orchestrator run again (a retry, a reset)
        adds the same jobs again, which is a replay, not a new iteration."""

    @classmethod
    def from_env(cls, *, lineage_fallback: str | None = None, client: Client | None = None) -> Orchestrator:
        """The orchestrator this job is: its workflow and job from the environment torc gives every
        job, its lineage from $TORC_ORCHESTRATOR_LINEAGE_ID (set on every spawned job) or, on the
        seed job, `lineage_fallback`."""
        missing = [v for v in ("TORC_WORKFLOW_ID", "TORC_JOB_ID") if not os.environ.get(v, "").isdigit()]
        if missing:
            raise TorcError(f"{' and '.join(missing)} not set: Orchestrator.from_env() runs inside a torc job")
        lineage = os.environ.get(LINEAGE_ENV) or lineage_fallback
        if not lineage:
            raise TorcError(f"no lineage: give lineage_fallback= on the seed job (its spawned jobs get ${LINEAGE_ENV})")
        generation = os.environ.get(GENERATION_ENV, "0")
        return cls(
            client or Client(autostart=False),
            int(os.environ["TORC_WORKFLOW_ID"]),
            int(os.environ["TORC_JOB_ID"]),
            lineage,
            int(generation) if generation.isdigit() else 0,
        )

    def info(self) -> LineageInfo:
        """The lineage as the daemon has it now: its iterations, the cap, the last state."""
        return self.client.call("jobs.lineage", {"workflow_id": self.workflow_id, "lineage": self.lineage}, LineageInfo)

    @property
    def state(self) -> Any:
        """The state given with the call that added this job (None on the seed)."""
        if self.generation == 0:
            return None
        return self.client.user_data.get(self.workflow_id, record_name(self.lineage, self.generation))

    def spawn(self, jobs: Sequence[SpawnJob], *, state: Any = None) -> Spawned:
        """Add the next generation of jobs, each waiting for this job."""
        return spawn_jobs(self.client, self.job_id, self.lineage, jobs, state)

    def converge(self, *, state: Any = None) -> Spawned:
        """End the lineage: add nothing, keep `state` as its final record."""
        return spawn_jobs(self.client, self.job_id, self.lineage, [], state)
