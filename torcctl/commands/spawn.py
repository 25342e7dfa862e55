"""Commands for a job that adds jobs to its own workflow as it runs (Torc's dynamic jobs), for
orchestrators written in shell: `jobs spawn` and `jobs lineage`."""

from __future__ import annotations

import os
import sys

import msgspec

from torcctl.api.client import Client
from torcctl.api.orchestrator import SpawnJob, spawn_jobs
from torcctl.commands import UsageError
from torcctl.data import _workflow
from torcctl.render import print_json
from torcd.core.spawning import LINEAGE_ENV
from torcd.protocol import MAX_SPEC_BYTES, LineageInfo


def jobs_spawn(client: Client, args) -> int:
    """Add jobs (a JSON list of Torc's spawn job fields) for the running job; print their ids."""
    if args.converge == (args.jobs is not None):
        raise UsageError("give the jobs to add (a JSON file, or - for stdin) or --converge, one of them")
    jobs: list[SpawnJob] = [] if args.converge else _read_jobs(args.jobs)
    job_id = args.job_id if args.job_id is not None else _env_id("TORC_JOB_ID", "--job-id")
    state = None
    if args.state is not None:
        try:
            state = msgspec.json.decode(args.state.encode())
        except msgspec.DecodeError as e:
            raise UsageError(f"--state is not JSON: {e}") from None
    print_json(spawn_jobs(client, job_id, _lineage(args.lineage), jobs, state))
    return 0


def jobs_lineage(client: Client, args) -> int:
    """Print a lineage's iterations, cap and states as JSON."""
    params = {"workflow_id": _workflow(args), "lineage": _lineage(args.lineage)}
    print_json(client.call("jobs.lineage", params, LineageInfo))
    return 0


def _read_jobs(path: str) -> list[SpawnJob]:
    try:
        with sys.stdin if path == "-" else open(path) as f:
            text = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    where = "standard input" if path == "-" else path
    try:
        return msgspec.json.decode(text.encode(), type=list[SpawnJob])
    except msgspec.ValidationError as e:
        raise UsageError(f"{where}: {e} (a JSON list of jobs: name, command, depends_on, ...)") from None
    except msgspec.DecodeError as e:
        raise UsageError(f"{where} is not JSON: {e}") from None


def _lineage(given: str | None) -> str:
    lineage = given or os.environ.get(LINEAGE_ENV)
    if not lineage:
        raise UsageError(f"which lineage? give --lineage (spawned jobs have ${LINEAGE_ENV})")
    return lineage


def _env_id(name: str, flag: str) -> int:
    value = os.environ.get(name, "")
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise UsageError(f"which job? give {flag} (jobs have ${name})")
    return int(value)
