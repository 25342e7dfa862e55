"""The allocation worker's main loop (`Worker.run`) in-process: its RPC answered by a WorkerService
in this process, its jobs real short processes. It runs what it is handed, reports every start,
exit and recovery, and leaves when nothing can come to it, when told to, or on a signal."""

from __future__ import annotations

import asyncio

from inproc import (
    FakeSlurm,
    InProcessRpc,
    eventually,
    make_allocations,
    make_retry_engine,
    make_worker,
    make_workers,
    rig_fixture,  # noqa: F401 (the `rig` fixture)
    running,
    statuses,
    submit,
)

from torcd import events as E

HEAD = "name: w\nslurm_schedulers:\n  - {name: s, account: a, node_cpus: 4}\n"


async def worker_for(rig, spec: str, cpus: int = 2):
    wf = await submit(rig, HEAD + spec, "slurm")
    rpc = InProcessRpc(rig, make_workers(rig))
    return wf, rpc, make_worker(rpc, wf, cpus=cpus)


async def test_it_runs_what_it_is_handed_and_leaves_when_nothing_can_come(rig):
    wf, rpc, worker = await worker_for(
        rig,
        "jobs:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true'}\n"
        "  - {name: c, command: 'true', depends_on: [a]}\n",
    )
    assert await asyncio.wait_for(worker.run(), 10) == "nothing left to run"
    assert set((await statuses(rig, wf)).values()) == {"completed"}
    methods = [m for m, _ in rpc.calls]
    assert methods[0] == "workers.register" and methods[-1] == "workers.finish"
    started = [s for _, params in rpc.calls for s in params.get("started", [])]
    assert sorted(s["job_id"] for s in started) == [1, 2, 3]  # every start reported, each once
    (finished,) = rig.of(E.WorkerFinished)
    assert finished.message == "nothing left to run"


async def test_a_failure_is_reported_with_its_return_code_and_decided_by_the_daemon(rig):
    wf, rpc, worker = await worker_for(rig, "jobs:\n  - {name: a, command: 'exit 3'}\n")
    async with running(make_retry_engine(rig)):
        assert await asyncio.wait_for(worker.run(), 10) == "nothing left to run"
    assert (await statuses(rig, wf))["a"] == "failed"
    (att,) = await rig.queries.attempts(1)
    assert att.return_code == 3 and att.pid is not None


async def test_it_runs_a_recovery_script_it_is_handed_and_reports_it(rig):
    spec = (
        "failure_handlers:\n  - name: h\n    rules:\n      - {exit_codes: [20], max_retries: 3, "
        "recovery_script: 'touch recovered'}\njobs:\n  - {name: a, command: 'exit 20', failure_handler: h}\n"
    )
    wf, rpc, worker = await worker_for(rig, spec)
    async with running(make_retry_engine(rig)):
        await asyncio.wait_for(worker.run(), 10)
    (done,) = rig.of(E.RecoveryFinished)
    assert done.message == "recovery script succeeded; retrying as attempt 2"
    assert (rig.tmp / "recovered").exists()
    (job,) = await rig.queries.jobs(wf)
    assert (job.status, job.attempt_id) == ("ready", 2)  # a retry goes to another worker than the one it failed on


async def test_it_leaves_when_the_daemon_says_its_allocation_ended(rig):
    slurm = FakeSlurm()
    wf = await submit(rig, HEAD + "jobs:\n  - {name: a, command: 'true'}\n", "slurm")
    allocations = make_allocations(rig, slurm)
    (aid,) = await allocations.submit(wf, "by hand")
    slurm.states.clear()
    await allocations.check()
    rpc = InProcessRpc(rig, make_workers(rig, allocations))
    assert await asyncio.wait_for(make_worker(rpc, wf, aid).run(), 10) == "the daemon asked it to stop"
    assert (await statuses(rig, wf))["a"] == "ready"


async def test_a_signal_stops_its_jobs_and_reports_them_before_it_leaves(rig):
    wf, rpc, worker = await worker_for(rig, "jobs:\n  - {name: a, command: 'sleep 30'}\n")
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.executor is not None and worker.executor.procs, what="the job to start")
    worker.on_signal()
    assert await asyncio.wait_for(task, 10) == "stopped by a signal"
    (att,) = await rig.queries.attempts(1)
    assert att.return_code == 143
    assert (await rig.workers.worker(worker.worker_id))["state"] == "done"
