"""Dispatcher in-process: ready jobs claimed, started within the CPU budget, their exits recorded;
what a restart finds reconciled from the tables and the exit log; shutdown terminates."""

from __future__ import annotations

import itertools
import time

import pytest
from inproc import (
    eventually,
    job_ids,
    make_dispatcher,
    rig_fixture,  # noqa: F401 (the `rig` fixture)
    running,
    statuses,
    submit,
)

from torcd import events as E
from torcd.core.attempts import Start
from torcd.core.pacing import MAX_AHEAD
from torcd.services.executor import UNKNOWN_EXIT, UNKNOWN_EXIT_MESSAGE
from torcd.spec.parse import parse_spec


def one_job(command: str, **extra) -> str:
    fields = "".join(f", {k}: {v}" for k, v in extra.items())
    return f"name: w\njobs:\n  - {{name: a, command: {command!r}{fields}}}\n"


@pytest.mark.parametrize(
    "command,status,rc",
    [
        ("true", "completed", 0),
        ("exit 3", "running", 3),  # exited; its failure handler has not spoken yet
        ("kill -9 $$", "running", 137),
    ],
)
async def test_a_ready_job_is_started_and_its_exit_recorded(rig, command, status, rc):
    wf = await submit(rig, one_job(command))
    d = make_dispatcher(rig)
    async with running(d):
        await eventually(lambda: rig.of(E.JobCompleted) or rig.of(E.JobExited), what="the exit")
    assert (await statuses(rig, wf))["a"] == status
    (att,) = await rig.queries.attempts((await job_ids(rig, wf))["a"])
    assert att.return_code == rc and att.pid is not None and att.start_time <= att.end_time


async def test_a_job_that_cannot_start_is_recorded_as_an_exit_with_the_reason(rig):
    wf = await submit(rig, "name: w\noutput_dir: out\njobs:\n  - {name: a, command: 'true'}\n")
    (rig.tmp / "out").write_text("a file where its log directory should be")
    d = make_dispatcher(rig)
    async with running(d):
        await eventually(lambda: rig.of(E.JobExited), what="the launch failure")
    (att,) = await rig.queries.attempts((await job_ids(rig, wf))["a"])
    assert att.pid is None and att.return_code != 0 and att.message


async def test_jobs_wider_than_the_free_cpus_wait_for_a_slot(rig):
    spec = "name: w\nresource_requirements:\n  - {name: two, num_cpus: 2}\njobs:\n" + "".join(
        f"  - {{name: j{i}, command: 'sleep 0.05', resource_requirements: two}}\n" for i in range(3)
    )
    wf = await submit(rig, spec)
    d = make_dispatcher(rig, max_cpus=2)
    async with running(d):
        await eventually(lambda: len(rig.of(E.JobCompleted)) == 3, what="three completions")
    spans = sorted(
        [(a.start_time, a.end_time) for j in (await job_ids(rig, wf)).values() for a in await rig.queries.attempts(j)]
    )
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans


async def test_a_completion_releases_the_dependent_which_then_runs(rig):
    wf = await submit(
        rig, "name: w\njobs:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true', depends_on: [a]}\n"
    )
    d = make_dispatcher(rig)
    async with running(d):
        await eventually(lambda: len(rig.of(E.JobCompleted)) == 2, what="both completions")
    assert [e.job_name for e in rig.of(E.JobCompleted)] == ["a", "b"]
    assert (await rig.queries.workflow(wf)).state == "done"


async def test_stop_terminates_running_jobs_and_puts_claimed_ones_back_to_ready(rig):
    wf = await submit(rig, "name: w\njobs:\n  - {name: a, command: 'sleep 30'}\n  - {name: b, command: 'sleep 30'}\n")
    d = make_dispatcher(rig, max_cpus=1)
    async with running(d):
        await eventually(lambda: rig.of(E.JobStarted), what="a start")
        began = time.monotonic()
        await d.stop(grace=2.0)
    assert time.monotonic() - began < 1.5  # sleep ends on TERM: no need to wait the grace out
    assert sorted((await statuses(rig, wf)).values()) == ["ready", "terminated"]


@pytest.mark.parametrize(
    "logged,rc,message",
    [
        ("5", 5, "ended while the daemon was down"),  # its shell recorded its status
        (None, UNKNOWN_EXIT, UNKNOWN_EXIT_MESSAGE),  # nothing recorded: as if SIGKILLed
    ],
)
async def test_reconcile_records_a_job_that_ended_while_the_daemon_was_down(rig, logged, rc, message):
    await submit(rig, one_job("true"))
    (job,), _ = await rig.execution.dispatch([], [], 1, "host")
    await rig.execution.dispatch([], [Start(job, 2**22 + 1, time.time())], 0, "host")  # a pid that is no job's
    if logged is not None:
        (rig.tmp / "exits.log").write_text(f"{job.job_id} {job.run_id} {job.attempt_id} {logged}\n")
    d = make_dispatcher(rig)
    await d.reconcile()
    (att,) = await rig.queries.attempts(job.job_id)
    assert (att.return_code, att.message) == (rc, message)
    assert not d.executor.procs


async def test_reconcile_puts_a_claimed_job_that_never_started_back_to_ready(rig):
    wf = await submit(rig, one_job("true"))
    await rig.execution.dispatch([], [], 1, "host")
    assert (await statuses(rig, wf))["a"] == "pending"
    await make_dispatcher(rig).reconcile()
    assert (await statuses(rig, wf))["a"] == "ready"


async def test_hundreds_of_jobs_that_cannot_start_are_each_recorded_and_the_dispatcher_goes_on(rig):
    """Every launch refused at once (its log directory is a file), right after a flood of short
    jobs (the pace claims far ahead): each is recorded as an exit with the reason, and the
    failures, each of which frees its slot again, never recurse into one another."""
    jobs = "".join(f"  - {{name: j{i}, command: 'true'}}\n" for i in range(1500))
    wf = await submit(rig, "name: w\noutput_dir: out\njobs:\n" + jobs)
    (rig.tmp / "out").write_text("a file where the log directory should be")
    d = make_dispatcher(rig, max_cpus=4)
    for _ in range(MAX_AHEAD):
        d.pace.started(time.time())
    async with running(d):
        await eventually(lambda: len(rig.of(E.JobExited)) == 1500, timeout=60.0, what="1,500 launch failures")
    assert set((await statuses(rig, wf)).values()) == {"running"}  # exited; no failure handler has spoken


async def test_a_start_is_recorded_while_the_job_runs_though_others_wait_behind_it(rig):
    """A queued job keeps the pass gathering; the gathering ends within its bound, so the first
    job's start is recorded while it still runs, not with its exit."""
    await submit(rig, "name: w\njobs:\n  - {name: a, command: 'sleep 2'}\n  - {name: b, command: 'true'}\n")
    d = make_dispatcher(rig, max_cpus=1)
    async with running(d):
        await eventually(lambda: rig.of(E.JobStarted), timeout=5.0, what="a's start recorded")
        assert not rig.of(E.JobCompleted) and not rig.of(E.JobExited)
        await d.stop(grace=2.0)


async def test_a_job_sent_ahead_of_a_busy_slot_never_runs_once_its_workflow_is_canceled(rig):
    wf = await submit(
        rig, "name: w\njobs:\n  - {name: long, command: 'sleep 30'}\n  - {name: next, command: 'touch next-ran'}\n"
    )
    d = make_dispatcher(rig, max_cpus=1)
    async with running(d):
        await eventually(lambda: len(d.executor.sent_ahead()) == 1, what="the next job sent ahead")
        stop = await rig.workflows.cancel_workflow(wf)
        await d.executor.kill(stop, grace=1.0)
        await eventually(lambda: not d.executor.sent_ahead() and not d.executor.procs, what="both gone")
        assert not d._queue  # not put back in line
    assert not (rig.tmp / "next-ran").exists()
    assert set((await statuses(rig, wf)).values()) == {"canceled"}
    assert not await rig.queries.attempts((await job_ids(rig, wf))["next"])


async def test_a_start_that_fails_in_the_shepherd_leaves_nothing_waiting_ahead_of_it(rig):
    wd = rig.tmp / "wd"
    wd.mkdir()
    spec = f"name: w\noutput_dir: {rig.tmp}/out\njobs:\n  - {{name: x, command: 'true'}}\n"
    spec += "  - {name: y, command: 'true'}\n"
    wf = await rig.workflows.create_workflow(parse_spec(spec, "spec.yaml"), str(wd), "spec.yaml", "local")
    wd.rmdir()  # its directory is gone: each start fails in the shepherd
    d = make_dispatcher(rig, max_cpus=1)
    async with running(d):
        await eventually(lambda: len(rig.of(E.JobExited)) == 2, what="both launch failures")
    assert not d.executor.sent_ahead() and d.executor.cpus_in_use == 0
    for j in (await job_ids(rig, wf)).values():
        (attempt,) = await rig.queries.attempts(j)
        assert attempt.pid is None and "working directory not found" in attempt.message


async def test_a_wide_job_is_not_sent_ahead_of_narrower_ones_it_could_not_replace(rig):
    spec = """name: w
resource_requirements:
  - {name: two, num_cpus: 2}
jobs:
  - {name: a, command: 'sleep 30', resource_requirements: two}
  - {name: b, command: 'sleep 0.2'}
  - {name: c, command: 'sleep 0.2'}
  - {name: y, command: 'touch y-ran', resource_requirements: two}
  - {name: "z{i}", command: 'sleep 0.2', parameters: {i: "1:100"}}
"""
    await submit(rig, spec)  # sent ahead, y would wait for a while the z jobs took the places of b and c
    d = make_dispatcher(rig, max_cpus=4)
    async with running(d):
        await eventually(lambda: (rig.tmp / "y-ran").exists(), what="y, once b and c have ended")
        await d.stop(grace=1.0)


async def test_nothing_queued_passes_a_job_sent_ahead_that_does_not_fit_yet(rig):
    spec = """name: w
resource_requirements:
  - {name: two, num_cpus: 2}
jobs:
  - {name: a, command: 'sleep 30', resource_requirements: two}
  - {name: b, command: 'sleep 0.3', resource_requirements: two}
  - {name: z0, command: 'sleep 0.3'}
  - {name: y, command: 'touch y-ran', resource_requirements: two}
  - {name: "z{i}", command: 'true', parameters: {i: "1:40"}}
"""
    wf = await submit(rig, spec)  # z0 takes b's place; y, sent ahead behind it, needs b's two CPUs
    d = make_dispatcher(rig, max_cpus=4)
    async with running(d):
        await eventually(lambda: (rig.tmp / "y-ran").exists(), what="y, once z0 has ended")
        await d.stop(grace=1.0)
    starts = {}
    for name, j in (await job_ids(rig, wf)).items():
        for attempt in await rig.queries.attempts(j):
            starts[name] = attempt.start_time
    assert all(starts["y"] <= t for name, t in starts.items() if name.startswith("z") and name != "z0")
