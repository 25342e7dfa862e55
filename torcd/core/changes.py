"""Which jobs of a finished workflow run again, and why (`workflows reinitialize`): Make's rule.

A completed job runs again when something it read changed after it started: an input file
newer than its start, or gone; an input dataset (a directory) with anything in it newer than
its start, or gone; user data it reads written after its start. A completed job
whose output file is gone runs again to make it. A job that did not complete (failed,
canceled, terminated, parked) runs again. Whatever depends on a job that runs again runs
again. Everything else stays completed. Pure: the caller gathers the facts (one stat per
file) and applies the plan.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torcd.core.status import FAILED_LIKE, JobStatus


@dataclass(frozen=True)
class JobFacts:
    id: int
    name: str
    status: JobStatus
    started: float | None  # when its last attempt started (None: it never ran)
    inputs: Sequence[str] = ()  # names of the files it reads
    outputs: Sequence[str] = ()  # ...and writes
    data_inputs: Sequence[str] = ()  # names of the user data it reads
    dataset_inputs: Sequence[str] = ()  # names of the datasets it reads
    dataset_outputs: Sequence[str] = ()  # ...and writes


@dataclass(frozen=True)
class FileFacts:
    name: str
    mtime: float | None  # None: it does not exist
    produced: bool  # a job of the workflow writes it


class MissingInput(Exception):
    """An input file (or dataset) no job writes is gone: nothing could make it."""

    def __init__(self, name: str, what: str = "file"):
        super().__init__(name)
        self.name, self.what = name, what


def plan_rerun(
    jobs: Sequence[JobFacts],
    files: Mapping[str, FileFacts],
    data_updated: Mapping[str, float],
    children: Mapping[int, Sequence[int]],
    datasets: Mapping[str, FileFacts] | None = None,
) -> dict[int, str]:
    """The jobs to run again, in the order found, each with why (the first reason found).
    MissingInput where a job needs a file (or dataset) that neither exists nor is made by a job.
    A dataset's time is the newest of what is in it."""
    datasets = datasets or {}
    for job in jobs:
        for name in job.inputs:
            f = files[name]
            if f.mtime is None and not f.produced:
                raise MissingInput(name)
        for name in job.dataset_inputs:
            if datasets[name].mtime is None and not datasets[name].produced:
                raise MissingInput(name, "dataset")
    out: dict[int, str] = {}
    for job in jobs:
        if reason := _own_reason(job, files, data_updated, datasets):
            out[job.id] = reason
    names = {job.id: job.name for job in jobs}
    queue = deque(out)  # breadth first: a job is said to follow the first of its parents found
    while queue:
        parent = queue.popleft()
        for child in children.get(parent, ()):
            if child not in out:
                out[child] = f"upstream job {names[parent]!r} runs again"
                queue.append(child)
    return out


def _own_reason(
    job: JobFacts, files: Mapping[str, FileFacts], data_updated: Mapping[str, float], datasets: Mapping[str, FileFacts]
) -> str | None:
    if job.status in FAILED_LIKE:
        return f"it ended {job.status.label}"
    if job.status is not JobStatus.COMPLETED:
        return None  # blocked or waiting: it runs anyway
    for name in job.outputs:
        if files[name].mtime is None:
            return f"its output file {name!r} is gone"
    for name in job.dataset_outputs:
        if datasets[name].mtime is None:
            return f"its output dataset {name!r} is gone"
    started = job.started if job.started is not None else float("-inf")
    for name in job.inputs:
        mtime = files[name].mtime
        if mtime is None:
            return f"input file {name!r} is gone"
        if mtime > started:
            return f"input file {name!r} changed after it ran"
    for name in job.dataset_inputs:
        mtime = datasets[name].mtime
        if mtime is None:
            return f"input dataset {name!r} is gone"
        if mtime == float("inf"):
            return f"input dataset {name!r} could not be read whole to tell whether it changed"
        if mtime > started:
            return f"input dataset {name!r} changed after it ran"
    for name in job.data_inputs:
        if data_updated.get(name, float("-inf")) > started:
            return f"input user data {name!r} changed after it ran"
    return None
