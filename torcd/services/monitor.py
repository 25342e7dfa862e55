"""Sampling what running jobs use: memory summed over each job's process tree, and CPU time.

A job's memory is the sum of the proportional set sizes (PSS) of its processes: a page shared
by several of them (libraries, a forked child's copy-on-write memory) counts once, as the
kernel would charge it to a cgroup, where summing RSS would count it in every process. PSS is
dear to read (every mapping is walked), so a routine sample reads each process's
/proc/PID/stat once (parent, CPU time, RSS) and takes the PSS only when
`core.memory_sampling.pss_needed` says the cheap figure could hide a new peak or an overrun.
Sampling runs in a thread of its own (never asyncio's default pool, where other work, such as
parsing six large specs, once kept it waiting while a job grew past its limit unkilled), once
per interval, and only while some job is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import msgspec
import structlog

from torcd.core.memory_sampling import MemoryHistory, pss_needed

log = structlog.get_logger("torcd.monitor")

MIN_INTERVAL = 0.1  # seconds: faster sampling would cost more than it tells
EARLY = 0.1  # share of its interval by which a job's sample may come early
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


class TreeProcess(msgspec.Struct, frozen=True):
    """One process of a sampled tree, known by its pid and start time (clock ticks after boot)."""

    pid: int
    started: int

    def kill(self) -> None:
        """SIGKILL it, unless its pid now names another process (one started since the sample)."""
        stat = _stat(self.pid)
        if stat is not None and stat.started == self.started:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)


class Sample(msgspec.Struct, frozen=True):
    memory: int  # bytes, summed over the tree: PSS when `exact`, else RSS (never less than PSS)
    cpu_seconds: float  # user + system, the live processes' own and their reaped children's
    # The tree, shell first: what an over-limit kill must reach.
    procs: tuple[TreeProcess, ...]
    exact: bool = True

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()


MAX_TREE = 4096  # processes sampled per job: a fork bomb must not stall every other job's sample


class _Stat(msgspec.Struct, frozen=True):
    ppid: int
    threads: int
    started: int
    cpu_ticks: int  # utime + stime + cutime + cstime
    rss: int  # bytes


def _stat(pid: int) -> _Stat | None:
    """The fields of /proc/PID/stat a sample uses, in one read; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields follow its last ')'.
    f = text[text.rfind(b")") + 2 :].split()
    try:
        return _Stat(
            int(f[1]), int(f[17]), int(f[19]), int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]), int(f[21]) * PAGE
        )
    except (IndexError, ValueError):
        return None


def _children(pid: int, threads: int) -> list[int]:
    """The children of every thread of `pid` (of its main thread alone when it has no other)."""
    out: list[int] = []
    try:
        tids = [str(pid)] if threads == 1 else os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue  # that thread ended; the others still count
    return out


def process_tree(pid: int) -> list[tuple[int, _Stat]]:
    """`pid` and its descendants with their stat, through each task's `children` list:
    proportional to the tree, where a scan of /proc costs as much as every process there. Each
    child is kept only if it is still the child of its parent (a pid reused since the list was
    read is some other process)."""
    root = _stat(pid)
    if root is None:
        return []
    tree = [(pid, root)]
    seen, i = {pid}, 0
    while i < len(tree) and len(tree) < MAX_TREE:
        parent, pstat = tree[i]
        i += 1
        for c in _children(parent, pstat.threads):
            if c in seen:
                continue
            seen.add(c)
            child = _stat(c)
            if child is not None and child.ppid == parent:
                tree.append((c, child))
    return tree


def pss(pid: int) -> int | None:
    """The process's proportional set size in bytes; None if smaps_rollup cannot be read (a
    setuid process, not ours to read), 0 if the process has ended."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except PermissionError:
        return None
    except FileNotFoundError:  # a kernel without smaps_rollup, or a process that has ended
        return None if os.path.exists(f"/proc/{pid}") else 0
    except (OSError, ValueError):
        return 0  # ended while read: it holds nothing now
    return 0  # a zombie maps nothing


def sample_tree(pid: int, history: MemoryHistory | None = None) -> Sample | None:
    """What the process tree under `pid` uses now; None if it is gone. With the job's `history`
    (which this updates), the PSS is read only when `pss_needed` says so; without, always."""
    tree = process_tree(pid)
    if not tree:
        return None
    rss = sum(s.rss for _, s in tree)
    exact = history is None or pss_needed(rss, history).needed
    memory = sum(p if (p := pss(c)) is not None else s.rss for c, s in tree) if exact else rss
    if history is not None:
        history.record(rss, exact)
    cpu = sum(s.cpu_ticks for _, s in tree) / TICKS
    return Sample(memory, cpu, tuple(TreeProcess(c, s.started) for c, s in tree), exact)


Sampler = Callable[[int, MemoryHistory | None], Sample | None]


class Watched(msgspec.Struct):
    pid: int
    limit: int | None  # bytes; over it, `on_over` is called once
    interval: float
    due: float = 0.0  # loop time of its next sample
    peak: int = 0
    cpu_seconds: float = 0.0
    over: bool = False
    # The sampler thread's alone: what `pss_needed` weighs.
    history: MemoryHistory = msgspec.field(default_factory=lambda: MemoryHistory(None))


class Usage(msgspec.Struct, frozen=True):
    peak_memory: int | None
    cpu_seconds: float | None


class Monitor:
    """Samples watched jobs (each at its own interval) and reports one that goes over its limit."""

    def __init__(self, on_over: Callable[[int, Sample], None], sample: Sampler = sample_tree):
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
        self.watched[job_id] = Watched(pid, limit, interval, loop.time() + interval, history=MemoryHistory(limit))
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
            # Those due within a tenth of their interval go with those due now: one wake-up and
            # one hop to the sampling thread for many jobs, not one for each.
            due = {job_id: w for job_id, w in self.watched.items() if w.due <= now + EARLY * w.interval}
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
        if sample.exact:  # a cheap sample (RSS) is no peak: PSS may be well under it
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


def _sample_all(due: dict[int, Watched], sample: Sampler) -> dict[int, Sample | None]:
    return {job_id: sample(w.pid, w.history) for job_id, w in due.items()}
