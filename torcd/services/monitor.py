"""Sampling what running jobs use: memory summed over each job's process tree, and CPU time.

A job's memory is the sum of the proportional set sizes (PSS) of its processes: a page shared
by several of them (libraries, a forked child's copy-on-write memory) counts once, as the
kernel would charge it to a cgroup, where summing RSS would count it in every process.
Sampling runs in a thread of its own (never asyncio's default pool, where other work, such as
parsing six large specs, once kept it waiting while a job grew past its limit unkilled), once
per interval, and only while some job is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import msgspec
import psutil
import structlog

log = structlog.get_logger("torcd.monitor")

MIN_INTERVAL = 0.1  # seconds: faster sampling would cost more than it tells


class Sample(msgspec.Struct, frozen=True):
    memory: int  # bytes, summed over the tree
    cpu_seconds: float  # user + system, the live processes' own and their reaped children's
    # The tree, shell first: what an over-limit kill must reach. psutil checks that each is
    # still the process it was (its start time) before signalling it, so a pid reused since
    # the sample is left alone.
    procs: tuple[psutil.Process, ...]

    def kill(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()


MAX_TREE = 4096  # processes sampled per job: a fork bomb must not stall every other job's sample


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue  # that thread ended; the others still count
    return out


def process_tree(pid: int) -> list[psutil.Process]:
    """`pid` and its descendants, through each task's `children` list: proportional to the
    tree, where a scan of /proc (psutil's `children`) costs as much as every process there.
    Each child is opened as it is found and kept only if it is still the child of its parent
    (a pid reused since the list was read is some other process)."""
    try:
        tree = [psutil.Process(pid)]
    except psutil.Error:
        return []
    seen, i = {pid}, 0
    while i < len(tree) and len(tree) < MAX_TREE:
        parent = tree[i]
        i += 1
        for c in _children(parent.pid):
            if c in seen:
                continue
            seen.add(c)
            try:
                child = psutil.Process(c)
                if child.ppid() == parent.pid:
                    tree.append(child)
            except psutil.Error:
                continue
    return tree


def sample_tree(pid: int) -> Sample | None:
    """What the process tree under `pid` uses now; None if it is gone."""
    memory, cpu, procs = 0, 0.0, []
    for proc in process_tree(pid):
        try:
            with proc.oneshot():
                try:
                    memory += proc.memory_full_info().pss
                except (psutil.AccessDenied, AttributeError):  # smaps_rollup unreadable: RSS will do
                    memory += proc.memory_info().rss
                t = proc.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
            procs.append(proc)
        except psutil.Error:  # gone, or (setuid) not ours to read at all
            continue
    return Sample(memory, cpu, tuple(procs)) if procs else None


class Watched(msgspec.Struct):
    pid: int
    limit: int | None  # bytes; over it, `on_over` is called once
    interval: float
    due: float = 0.0  # loop time of its next sample
    peak: int = 0
    cpu_seconds: float = 0.0
    over: bool = False


class Usage(msgspec.Struct, frozen=True):
    peak_memory: int | None
    cpu_seconds: float | None


class Monitor:
    """Samples watched jobs (each at its own interval) and reports one that goes over its limit."""

    def __init__(self, on_over: Callable[[int, Sample], None], sample: Callable[[int], Sample | None] = sample_tree):
        self.on_over = on_over
        self.sample = sample  # what one job's tree uses now (tests pass a fake)
        self.watched: dict[int, Watched] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._sampler: ThreadPoolExecutor | None = None  # its one thread, made on the first watch

    def watch(self, job_id: int, pid: int, limit: int | None, interval: float) -> None:
        loop = asyncio.get_running_loop()
        interval = max(MIN_INTERVAL, interval)
        # The first sample after one interval: a job shorter than that costs nothing to watch.
        self.watched[job_id] = Watched(pid, limit, interval, loop.time() + interval)
        self._wake.set()
        if self._sampler is None:
            self._sampler = ThreadPoolExecutor(1, thread_name_prefix="torcd-monitor")
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    def forget(self, job_id: int) -> Usage:
        """Stop watching a job (it ended); what was seen of it."""
        w = self.watched.pop(job_id, None)
        if w is None:
            return Usage(None, None)
        return Usage(w.peak or None, w.cpu_seconds or None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.watched:
            now = loop.time()
            due = {job_id: w for job_id, w in self.watched.items() if w.due <= now}
            if due:
                try:
                    samples = await loop.run_in_executor(self._sampler, _sample_all, due, self.sample)
                except Exception:  # one bad read must not end sampling (and enforcement) for every job
                    log.exception("sampling_failed")
                    samples = {}
                for job_id, w in due.items():
                    # Only the attempt it was taken for: the job may have ended and started again.
                    if self.watched.get(job_id) is w:
                        self._record(w, job_id, samples.get(job_id), loop.time())
            if not self.watched:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # a new job may be due sooner
                await asyncio.wait_for(
                    self._wake.wait(), max(0.0, min(w.due for w in self.watched.values()) - loop.time())
                )

    def _record(self, w: Watched, job_id: int, sample: Sample | None, now: float) -> None:
        w.due = now + w.interval
        if sample is None:
            return
        w.peak = max(w.peak, sample.memory)
        w.cpu_seconds = max(w.cpu_seconds, sample.cpu_seconds)
        if w.limit is not None and sample.memory > w.limit and not w.over:
            w.over = True
            self.on_over(job_id, sample)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._sampler is not None:
            self._sampler.shutdown(wait=False, cancel_futures=True)
            self._sampler = None


def _sample_all(due: dict[int, Watched], sample: Callable[[int], Sample | None]) -> dict[int, Sample | None]:
    return {job_id: sample(w.pid) for job_id, w in due.items()}
