"""Monitor in-process, with a fake sampler: each watched job sampled at its interval, the peak and
CPU time kept, one call when a job first goes over its limit, sampling that survives a bad read."""

from __future__ import annotations

import asyncio
import subprocess
import time

from inproc import eventually, make_monitor

from torcd.core.memory_sampling import MemoryHistory
from torcd.services.monitor import MIN_INTERVAL, Sample, sample_tree


class FakeSampler:
    """What each pid uses, as the test says; raises for a pid told to."""

    def __init__(self, **by_pid):
        self.memory = {int(k[1:]): v for k, v in by_pid.items()}  # p12=100 -> pid 12 uses 100 bytes
        self.calls: list[int] = []
        self.failing: set[int] = set()

    def __call__(self, pid: int, history=None) -> Sample | None:
        self.calls.append(pid)
        if pid in self.failing:
            self.failing.discard(pid)
            raise OSError("a read of /proc that went wrong")
        if pid not in self.memory:
            return None
        return Sample(self.memory[pid], cpu_seconds=len(self.calls) / 10, procs=())


async def test_a_job_over_its_limit_is_reported_once_however_often_it_is_sampled(tmp_path):
    over, sampler = [], FakeSampler(p10=5000, p20=10)
    m = make_monitor(lambda job, sample: over.append((job, sample.memory)), sampler)
    m.watch(1, 10, limit=1000, interval=MIN_INTERVAL)
    m.watch(2, 20, limit=1000, interval=MIN_INTERVAL)
    await eventually(lambda: sampler.calls.count(10) >= 3, what="three samples")
    assert over == [(1, 5000)]
    m.stop()


async def test_forget_says_the_peak_and_the_last_cpu_time(tmp_path):
    sampler = FakeSampler(p10=300)
    m = make_monitor(lambda *a: None, sampler)
    m.watch(1, 10, limit=None, interval=MIN_INTERVAL)
    await eventually(lambda: len(sampler.calls) >= 1, what="a sample")
    sampler.memory[10] = 100  # shrinks: the peak stays
    await eventually(lambda: len(sampler.calls) >= 2, what="another sample")
    await asyncio.sleep(0)
    usage = m.forget(1)
    assert usage.peak_memory == 300 and usage.cpu_seconds >= 0.1
    assert m.forget(1).peak_memory is None  # forgotten: nothing more to say
    m.stop()


async def test_a_job_shorter_than_its_interval_is_never_sampled(tmp_path):
    sampler = FakeSampler(p10=300)
    m = make_monitor(lambda *a: None, sampler)
    m.watch(1, 10, limit=1, interval=10.0)
    await asyncio.sleep(0.01)
    assert m.forget(1).peak_memory is None and sampler.calls == []
    m.stop()


async def test_a_failed_read_does_not_end_sampling(tmp_path):
    over, sampler = [], FakeSampler(p10=5000)
    sampler.failing.add(10)
    m = make_monitor(lambda job, sample: over.append(job), sampler)
    m.watch(1, 10, limit=1000, interval=MIN_INTERVAL)
    await eventually(lambda: over, what="the job over its limit, after the failed read")
    assert sampler.calls[:2] == [10, 10]
    m.stop()


async def test_sampling_stops_when_no_job_is_watched(tmp_path):
    sampler = FakeSampler(p10=300)
    m = make_monitor(lambda *a: None, sampler)
    m.watch(1, 10, limit=None, interval=MIN_INTERVAL)
    await eventually(lambda: sampler.calls, what="a sample")
    m.forget(1)
    await eventually(lambda: m._task.done(), what="the sampling task to end")
    m.stop()


def test_a_real_tree_is_read_exactly_first_then_cheaply_and_killed_whole():
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30; wait"])
    try:
        first = None
        for _ in range(100):  # until the shell has started both sleeps
            first = sample_tree(proc.pid)
            if first is not None and len(first.procs) == 3:
                break
            time.sleep(0.01)
        assert first is not None and first.exact and first.procs[0].pid == proc.pid
        history = MemoryHistory(limit=None)
        exact = sample_tree(proc.pid, history)
        assert exact is not None and exact.exact and exact.memory > 0
        later = [sample_tree(proc.pid, history) for _ in range(20)]
        cheap = [s for s in later if s is not None and not s.exact]
        assert cheap, "a tree that has settled is read cheaply"  # exact again only at a new RSS high
        assert all(s.memory > 0 and s.cpu_seconds >= 0 for s in cheap)
        cheap[-1].kill()
        assert proc.wait(timeout=10) == -9
    finally:
        proc.kill()
        proc.wait()
