"""AutoScheduler in-process, with a fake clock and a fake sbatch: each tick gathers a workflow's
inputs, submits when the decision says so, and records the decisions as events (a wait only when
its reason changes)."""

from __future__ import annotations

import time

from inproc import (
    FakeSlurm,
    eventually,
    make_allocations,
    make_autoscheduler,
    make_workers,
    record_exit,
    rig_fixture,  # noqa: F401 (the `rig` fixture)
    running,
    submit,
    worker_with_jobs,
)

from torcd import events as E
from torcd.core.autoschedule import AutoSchedulePolicy
from torcd.core.retry import Action, RetryDecision

SPEC = (
    "name: w\nslurm_schedulers:\n  - {name: s, account: a, node_cpus: 4}\njobs:\n"
    "  - {name: a, command: 'true'}\n  - {name: b, command: 'true'}\n"
)
ON = AutoSchedulePolicy(enabled=True, threshold=5, cooldown=1800, stranded_timeout=7200)


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def setup(rig, policy=ON):
    slurm, clock = FakeSlurm(), Clock()
    wf = await submit(rig, SPEC, "slurm")
    allocations = make_allocations(rig, slurm)
    if policy is not None:
        await rig.slurm.set_auto_schedule(wf, policy)
    return wf, slurm, clock, allocations, make_autoscheduler(rig, allocations, clock)


def decisions(rig) -> list[tuple[str, str]]:
    return [(e.action, e.message) for e in rig.of(E.AutoScheduleDecided)]


async def test_ready_jobs_without_allocations_get_one_by_rule_1(rig):
    wf, slurm, _, _, auto = await setup(rig)
    await auto.tick()
    assert len(slurm.submitted) == 1
    ((action, message),) = decisions(rig)
    assert action == "submit" and message.startswith("[s] ")
    (alloc,) = await rig.slurm.allocations(wf)
    assert alloc.reason.startswith("auto-schedule rule 1: ")


async def test_a_workflow_without_the_policy_is_left_alone(rig):
    _, slurm, _, _, auto = await setup(rig, policy=None)
    await auto.tick()
    assert slurm.submitted == [] and decisions(rig) == []


async def test_a_wait_is_recorded_once_while_its_reason_stays(rig):
    _, slurm, _, _, auto = await setup(rig)
    for _ in range(3):
        await auto.tick()  # the first submits; the allocation is then pending
    assert len(slurm.submitted) == 1
    assert [a for a, _ in decisions(rig)] == ["submit", "wait"]


async def test_a_stranded_retry_gets_compute_once_the_fake_clock_passes_the_timeout(rig):
    wf, slurm, clock, allocations, auto = await setup(rig)
    (aid,) = await allocations.submit(wf, "by hand")
    _, (job,) = await worker_with_jobs(rig, make_workers(rig, allocations), wf, aid)  # the allocation runs
    await record_exit(rig, job, 1)
    (failure,) = await rig.execution.failures_awaiting_decision()
    await rig.execution.apply_decisions([(failure, RetryDecision(Action.RETRY, 0, "retry"))])
    await auto.tick()
    assert len(slurm.submitted) == 1  # one retry, below the threshold, not yet stranded
    clock.now += 7201
    await auto.tick()
    assert len(slurm.submitted) == 2
    assert [a for a, _ in decisions(rig)] == ["wait", "submit"]
    assert (await rig.slurm.allocations(wf))[-1].reason.startswith("auto-schedule rule 3: ")


async def test_setting_the_policy_wakes_the_loop(rig):
    wf, slurm, _, _, auto = await setup(rig, policy=None)
    async with running(auto):
        await rig.slurm.set_auto_schedule(wf, ON)  # auto_schedule_set: no need to wait the interval out
        await eventually(lambda: slurm.submitted, what="the submission")
