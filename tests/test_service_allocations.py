"""AllocationService in-process, with a fake sbatch/squeue/sinfo: allocations sized and submitted,
followed through the queue, and workers that go silent or lose their allocation declared lost."""

from __future__ import annotations

import os
import stat
import time

import pytest
from inproc import (
    FakeSlurm,
    make_allocations,
    make_workers,
    rig_fixture,  # noqa: F401 (the `rig` fixture)
    submit,
    worker_with_jobs,
)

from torcd import events as E
from torcd.core.slurm_plan import NodeShape
from torcd.errors import InvalidParams
from torcd.services.allocations import WORKER_LOST_RC
from torcd.slurm import SlurmError


def slurm_spec(jobs: int = 3, node: str = ", node_cpus: 4") -> str:
    return f"name: w\nslurm_schedulers:\n  - {{name: s, account: acct{node}}}\njobs:\n" + "".join(
        f"  - {{name: j{i}, command: 'true'}}\n" for i in range(jobs)
    )


async def test_an_allocation_is_submitted_with_its_own_credential(rig):
    slurm = FakeSlurm()
    wf = await submit(rig, slurm_spec(), "slurm")
    (aid,) = await make_allocations(rig, slurm).submit(wf, "by hand")
    ((script, cwd),) = slurm.submitted
    assert cwd == str(rig.tmp) and "--account=acct" in script and f"--workflow-id {wf}" in script.replace("=", " ")
    (alloc,) = await rig.slurm.allocations(wf)
    assert (alloc.id, alloc.state, alloc.slurm_job_id, alloc.reason) == (aid, "pending", "1001", "by hand")
    token = rig.tmp / "credentials" / f"alloc_{aid}.token"
    assert stat.S_IMODE(os.stat(token).st_mode) == 0o600
    assert (await rig.slurm.allocation_credential(aid))[1] == wf
    assert [e.kind for e in rig.events if "allocation" in e.kind] == ["allocation_submitted"]


async def test_a_failed_sbatch_leaves_a_failed_allocation_with_the_reason(rig):
    slurm = FakeSlurm()

    async def refuse(script, cwd):
        raise SlurmError("sbatch failed (exit 1): invalid account")

    slurm.sbatch = refuse
    wf = await submit(rig, slurm_spec(), "slurm")
    await make_allocations(rig, slurm).submit(wf, "by hand")
    (alloc,) = await rig.slurm.allocations(wf)
    assert alloc.state == "failed" and "invalid account" in alloc.reason


async def test_without_a_tcp_door_nothing_is_submitted(rig):
    slurm = FakeSlurm()
    wf = await submit(rig, slurm_spec(), "slurm")
    with pytest.raises(InvalidParams, match="TCP door"):
        await make_allocations(rig, slurm, url=None).submit(wf, "by hand")
    assert slurm.submitted == [] and await rig.slurm.allocations(wf) == []


@pytest.mark.parametrize(
    "jobs,node_cpus,count",
    [
        (3, 4, 1),  # three one-CPU jobs fit one four-CPU node
        (9, 4, 3),
        (40, 4, 4),  # capped at max_allocations
    ],
)
async def test_as_many_allocations_as_the_ready_jobs_need(rig, jobs, node_cpus, count):
    slurm = FakeSlurm()
    wf = await submit(rig, slurm_spec(jobs, f", node_cpus: {node_cpus}"), "slurm")
    assert len(await make_allocations(rig, slurm).submit(wf, "planned")) == count == len(slurm.submitted)


async def test_the_node_shape_is_asked_of_sinfo_until_it_answers_then_kept(rig):
    slurm = FakeSlurm(node_shape=None)
    wf = await submit(rig, slurm_spec(2, node=""), "slurm")
    allocations = make_allocations(rig, slurm)
    spec = (await rig.slurm.schedulers(wf))["s"]
    needs = await rig.slurm.ready_job_needs(wf, "s")
    assert (await allocations.node_shape(spec, needs)).cpus == 1  # no answer: as wide as the widest job
    slurm.node_shape = NodeShape(64, None, 0)
    assert (await allocations.node_shape(spec, needs)).cpus == 64
    assert (await allocations.node_shape(spec, needs)).cpus == 64
    assert slurm.sinfo_calls == 2


@pytest.mark.parametrize(
    "seen,state",
    [
        ("PENDING", "pending"),
        ("RUNNING", "running"),
        ("COMPLETING", "running"),
        ("TIMEOUT", "done"),
        (None, "done"),  # left the queue
    ],
)
async def test_check_follows_each_allocation_through_the_queue(rig, seen, state):
    slurm = FakeSlurm()
    wf = await submit(rig, slurm_spec(), "slurm")
    allocations = make_allocations(rig, slurm)
    (aid,) = await allocations.submit(wf, "by hand")
    if seen is None:
        slurm.states.clear()
    else:
        slurm.states["1001"] = seen
    await allocations.check()
    assert (await rig.slurm.allocations(wf))[0].state == state


async def test_a_running_allocation_is_not_taken_back_to_pending(rig):
    slurm = FakeSlurm()
    wf = await submit(rig, slurm_spec(), "slurm")
    allocations = make_allocations(rig, slurm)
    await allocations.submit(wf, "by hand")
    slurm.states["1001"] = "RUNNING"
    await allocations.check()
    slurm.states["1001"] = "PENDING"  # requeued, as squeue may briefly say
    await allocations.check()
    assert (await rig.slurm.allocations(wf))[0].state == "running"


async def worker_with_a_job(rig, allocations, wf: int, aid: int | None = None) -> int:
    wid, jobs = await worker_with_jobs(rig, make_workers(rig, allocations), wf, aid)
    assert jobs
    return wid


async def test_a_silent_worker_is_lost_and_its_jobs_exit_137(rig):
    wf = await submit(rig, slurm_spec(1), "slurm")
    allocations = make_allocations(rig, heartbeat_timeout=60)
    wid = await worker_with_a_job(rig, allocations, wf)
    await allocations.check(now=time.time() + 30)
    assert (await rig.workers.worker(wid))["state"] == "active"  # not silent for long enough
    await allocations.check(now=time.time() + 61)
    assert (await rig.workers.worker(wid))["state"] == "lost"
    (lost,) = rig.of(E.WorkerLost)
    assert lost.message.startswith("no heartbeat for 6")
    (exited,) = rig.of(E.JobExited)
    (att,) = await rig.queries.attempts(exited.job_id)
    assert att.return_code == WORKER_LOST_RC and att.message.startswith(f"worker {wid} lost: no heartbeat")


@pytest.mark.parametrize(
    "verdict,cause,why",
    [
        ("TIMEOUT", "timeout", "Slurm ended its allocation at the time limit (TIMEOUT)"),
        ("OUT_OF_MEMORY", "oom", "Slurm ended its allocation out of memory (OUT_OF_MEMORY)"),
        ("NODE_FAIL", None, "its node failed (NODE_FAIL)"),
        (None, None, "its allocation left the Slurm queue (GONE)"),
    ],
)
async def test_a_worker_whose_allocation_ended_is_lost_with_slurms_verdict_as_cause(rig, verdict, cause, why):
    slurm = FakeSlurm()
    wf = await submit(rig, slurm_spec(1), "slurm")
    allocations = make_allocations(rig, slurm, poll_interval=5.0)
    (aid,) = await allocations.submit(wf, "by hand")
    wid = await worker_with_a_job(rig, allocations, wf, aid)
    slurm.states.pop("1001")
    if verdict:
        slurm.states["1001"] = verdict
    await allocations.check(now=time.time() + 11)  # silent for more than two polls
    assert (await rig.workers.worker(wid))["state"] == "lost"
    assert rig.of(E.WorkerLost)[0].message == why
    (att,) = await rig.queries.attempts(rig.of(E.JobExited)[0].job_id)
    assert (att.return_code, att.cause) == (WORKER_LOST_RC, cause)


async def test_sbatchs_error_after_a_worker_started_the_allocation_leaves_it_running(rig):
    slurm = FakeSlurm()
    wf = await submit(rig, slurm_spec(), "slurm")

    async def queued_then_timed_out(script, cwd):
        # Slurm queued and started the job, but sbatch's answer never came back in time.
        (pending,) = await rig.slurm.allocations(wf)
        await worker_with_jobs(rig, make_workers(rig, allocations), wf, pending.id)
        raise SlurmError("sbatch timed out")

    slurm.sbatch = queued_then_timed_out
    allocations = make_allocations(rig, slurm)
    await allocations.submit(wf, "by hand")
    (alloc,) = await rig.slurm.allocations(wf)
    assert alloc.state == "running" and alloc.ended is None
    assert "allocation_failed" not in [e.kind for e in rig.events]
