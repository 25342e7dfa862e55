"""WorkerService in-process: who may act for which worker, and what one poll records and hands out."""

from __future__ import annotations

import time

import pytest
from inproc import (
    FakeSlurm,
    make_allocations,
    make_workers,
    rig_fixture,  # noqa: F401 (the `rig` fixture)
    statuses,
    submit,
)

from torcd import events as E
from torcd import protocol as p
from torcd.credentials import Caller
from torcd.errors import InvalidParams, Unauthorized
from torcd.store.workers import bounded_end_time

ADMIN = Caller()
API = "http://daemon:1"
SPEC = (
    "name: w\nslurm_schedulers:\n  - {name: s, account: a, node_cpus: 4}\njobs:\n"
    "  - {name: a, command: 'true'}\n  - {name: b, command: 'true'}\n  - {name: c, command: 'true', depends_on: [a]}\n"
)


@pytest.mark.parametrize(
    "reported,handed_out,now,recorded",
    [
        (150.0, 100.0, 200.0, 150.0),  # within the attempt: as reported
        (50.0, 100.0, 200.0, 100.0),  # a clock behind: not before it was handed out
        (900.0, 100.0, 200.0, 200.0),  # a clock ahead (or a forged report): not after now
    ],
)
def test_an_end_time_is_kept_within_its_attempt(reported, handed_out, now, recorded):
    assert bounded_end_time(reported, handed_out, now) == recorded


async def slurm_workflow(rig):
    slurm = FakeSlurm()
    wf = await submit(rig, SPEC, "slurm")
    allocations = make_allocations(rig, slurm)
    (aid,) = await allocations.submit(wf, "by hand")
    return wf, aid, slurm, make_workers(rig, allocations)


async def register(workers, wf, aid, caller=ADMIN) -> int:
    return await workers.register(p.RegisterWorker(workflow_id=wf, host="node1", cpus=4, allocation_id=aid), caller)


async def test_a_credential_registers_only_for_its_own_allocation(rig):
    wf, aid, _, workers = await slurm_workflow(rig)
    with pytest.raises(Unauthorized, match=f"not allocation {aid + 1}"):
        await register(workers, wf, aid + 1, Caller(aid, wf))
    wid = await register(workers, wf, aid, Caller(aid, wf))
    assert (await rig.slurm.allocations(wf))[0].state == "running"  # its first worker started it
    with pytest.raises(Unauthorized, match="does not belong"):
        await workers.poll(p.WorkerPoll(worker_id=wid), Caller(aid + 1, wf), API)
    with pytest.raises(Unauthorized, match="does not belong"):  # nor may it learn whether one exists
        await workers.poll(p.WorkerPoll(worker_id=wid + 100), Caller(aid, wf), API)


async def test_an_ended_allocations_credential_registers_no_more_workers(rig):
    wf, aid, slurm, workers = await slurm_workflow(rig)
    slurm.states.clear()
    await workers.allocations.check()
    with pytest.raises(Unauthorized, match="has ended"):
        await register(workers, wf, aid, Caller(aid, wf))


async def test_a_poll_hands_out_what_fits_and_records_starts_and_exits(rig):
    wf, aid, _, workers = await slurm_workflow(rig)
    wid = await register(workers, wf, aid)
    first = await workers.poll(p.WorkerPoll(worker_id=wid, free_cpus=1), ADMIN, API)
    (job,) = first.jobs
    assert first.may_come and first.api_url == API and first.waiting == 1
    second = await workers.poll(
        p.WorkerPoll(
            worker_id=wid,
            free_cpus=0,
            started=[p.StartedReport(job.job_id, job.run_id, job.attempt_id, 777)],
            exits=[p.ExitReport(job.job_id, job.run_id, job.attempt_id, 0, time.time())],
        ),
        ADMIN,
        API,
    )
    assert second.jobs == []
    (att,) = await rig.queries.attempts(job.job_id)
    assert (att.pid, att.return_code) == (777, 0)
    assert (await statuses(rig, wf))[job.name] == "completed"


async def test_reports_about_jobs_not_handed_to_this_worker_are_dropped(rig):
    wf, aid, _, workers = await slurm_workflow(rig)
    mine, other = await register(workers, wf, aid), await register(workers, wf, aid)
    (job,) = (await workers.poll(p.WorkerPoll(worker_id=other, free_cpus=1), ADMIN, API)).jobs
    await workers.poll(
        p.WorkerPoll(worker_id=mine, exits=[p.ExitReport(job.job_id, job.run_id, job.attempt_id, 0, time.time())]),
        ADMIN,
        API,
    )
    assert (await statuses(rig, wf))[job.name] == "running"
    assert not rig.of(E.JobCompleted)


async def test_a_worker_of_an_ended_allocation_is_told_to_stop_but_its_reports_count(rig):
    wf, aid, slurm, workers = await slurm_workflow(rig)
    wid = await register(workers, wf, aid)
    (job,) = (await workers.poll(p.WorkerPoll(worker_id=wid, free_cpus=1), ADMIN, API)).jobs
    slurm.states["1001"] = "TIMEOUT"
    await workers.allocations.check()
    result = await workers.poll(
        p.WorkerPoll(
            worker_id=wid, free_cpus=4, exits=[p.ExitReport(job.job_id, job.run_id, job.attempt_id, 0, time.time())]
        ),
        ADMIN,
        API,
    )
    assert result.stop and result.jobs == []
    assert (await statuses(rig, wf))[job.name] == "completed"


async def test_finishing_with_jobs_running_loses_the_worker_and_its_jobs(rig):
    wf, aid, _, workers = await slurm_workflow(rig)
    wid = await register(workers, wf, aid)
    (job,) = (await workers.poll(p.WorkerPoll(worker_id=wid, free_cpus=1), ADMIN, API)).jobs
    await workers.finish(p.WorkerFinish(worker_id=wid, reason="idle"), ADMIN)
    assert (await rig.workers.worker(wid))["state"] == "lost"
    (att,) = await rig.queries.attempts(job.job_id)
    assert att.return_code == 137 and "finished with jobs running: idle" in att.message
    assert (await workers.poll(p.WorkerPoll(worker_id=wid, free_cpus=4), ADMIN, API)).stop


async def test_finishing_idle_closes_the_worker(rig):
    wf, aid, _, workers = await slurm_workflow(rig)
    wid = await register(workers, wf, aid)
    await workers.finish(p.WorkerFinish(worker_id=wid, reason="nothing left"), ADMIN)
    assert (await rig.workers.worker(wid))["state"] == "done"
    assert rig.of(E.WorkerFinished)[0].message == "nothing left"


async def test_a_worker_taking_over_a_journal_abandons_what_it_cannot_watch(rig):
    wf, aid, _, workers = await slurm_workflow(rig)
    wid = await register(workers, wf, aid)
    (job,) = (await workers.poll(p.WorkerPoll(worker_id=wid, free_cpus=1), ADMIN, API)).jobs
    await workers.poll(p.WorkerPoll(worker_id=wid, abandon=True), ADMIN, API)
    (att,) = await rig.queries.attempts(job.job_id)
    assert att.return_code == 137 and "its worker died" in att.message


async def test_credentials_are_cached_and_forgotten_with_their_workflow(rig):
    wf, aid, _, workers = await slurm_workflow(rig)
    known = await workers.credential(aid)
    assert known is not None and known[1] == wf
    await rig.workflows.cancel_workflow(wf)
    await rig.workflows.delete_workflow(wf)
    assert await workers.credential(aid) == known  # cached: the store is not asked again
    workers.forget(wf)
    assert await workers.credential(aid) is None


async def test_a_slurm_workflow_with_a_labelled_job_is_refused(rig):
    """A labelled job runs only while a `run --label` follows it; allocations never take one, so a
    Slurm workflow holding one would wait for ever."""
    with pytest.raises(InvalidParams, match="job 'b' has the label 'gpu': labelled jobs run only on this machine"):
        await submit(rig, SPEC.replace("{name: b, command: 'true'}", "{name: b, command: 'true', label: gpu}"), "slurm")
    assert await rig.queries.workflows() == []


async def test_the_poll_that_lets_the_last_worker_go_first_cancels_the_allocations_still_queued(rig):
    slurm = FakeSlurm()
    wf = await submit(
        rig, "name: w\nslurm_schedulers:\n  - {name: s, account: a}\njobs:\n  - {name: a, command: 'true'}\n", "slurm"
    )
    allocations = make_allocations(rig, slurm)
    running, _ = await allocations.submit(wf, "by hand", count=2)
    workers = make_workers(rig, allocations)
    wid = await register(workers, wf, running)
    (job,) = (await workers.poll(p.WorkerPoll(worker_id=wid, free_cpus=1), ADMIN, API)).jobs
    queued_id = sorted(slurm.states)[1]  # the second submitted, never started
    done = p.ExitReport(job.job_id, job.run_id, job.attempt_id, 0, time.time())
    reply = await workers.poll(p.WorkerPoll(worker_id=wid, free_cpus=1, exits=[done]), ADMIN, API)
    assert (reply.jobs, reply.may_come) == ([], 0)  # it may leave: nothing can come
    # ...and before it does (its allocation's end would let Slurm start the next), the queued one is gone.
    assert slurm.states[queued_id] == "CANCELLED"
