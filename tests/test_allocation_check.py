"""The allocation path in-process, against a real store and a stand-in for squeue: what the
tables and the event log say after each poll is what `core.allocations` decided. (tests/test_slurm.py
runs the same path on a real Slurm cluster.)"""

from __future__ import annotations

import pytest

from torcd.services.allocations import WORKER_LOST_RC, AllocationService
from torcd.spec.parse import parse_spec
from torcd.store.store import Store

SPEC = """
name: s
slurm_schedulers:
  - {name: one, account: acct, walltime: "00:10:00"}
jobs:
  - {name: j, command: "true", scheduler: one}
"""


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(str(tmp_path / "t.db"))
    published = []
    s.on_commit = published.extend
    s.published = published
    yield s
    await s.close()


async def allocation(
    store: Store, tmp_path, queue: dict[str, str], cancelled: list[str] | None = None, spec: str = SPEC
) -> tuple[int, int, AllocationService]:
    wf = await store.workflows.create_workflow(
        parse_spec(spec, "spec.yaml"), str(tmp_path), "spec.yaml", executor="slurm"
    )
    aid = await store.slurm.add_allocation(wf, "one", 4, "submitted by a test", False)
    await store.slurm.allocation_submitted(aid, "812", str(tmp_path / "a.sh"), None)

    async def squeue(ids):  # the queue as the test says it is
        return {i: queue[i] for i in ids if i in queue}

    async def scancel(ids):  # what scancel --state=PENDING does to the queue
        for i in ids:
            if queue.get(i) == "PENDING":
                queue[i] = "CANCELLED"
                (cancelled if cancelled is not None else []).append(i)

    service = AllocationService(
        store.queries,
        store.slurm,
        store.workers,
        store.execution,
        url=None,
        squeue=squeue,
        scancel=scancel,
        credentials_dir=str(tmp_path),
        slurm_output_dir=str(tmp_path),
        poll_interval=5.0,
        heartbeat_timeout=60.0,
    )
    service.started = 0.0
    return wf, aid, service


@pytest.fixture
def queue() -> dict[str, str]:
    return {}


def kinds(store: Store) -> list[tuple[str, int | None, str | None]]:
    return [
        (
            e.kind,
            getattr(e, "allocation_id", None) or getattr(e, "worker_id", None),
            e.status if hasattr(e, "status") else None,
        )
        for e in store.published
        if e.kind.startswith(("allocation", "worker"))
    ]


async def test_the_queue_moves_an_allocation_and_a_silent_worker_is_lost_with_its_verdict(store, tmp_path, queue):
    wf, aid, service = await allocation(store, tmp_path, queue)
    queue["812"] = "PENDING"
    await service.check()
    assert (await store.slurm.allocations(wf))[0].state == "pending"
    queue["812"] = "RUNNING"
    await service.check()
    wid = await store.workers.register_worker(wf, aid, "n1", 4)
    a = (await store.slurm.allocations(wf))[0]
    assert (a.state, a.slurm_state) == ("running", "RUNNING") and a.started is not None and a.ended is None
    queue["812"] = "REQUEUED"  # a requeue is not a restart
    await service.check()
    assert (await store.slurm.allocations(wf))[0].state == "running"
    queue["812"] = "TIMEOUT"
    beat = (await store.workers.worker(wid))["last_heartbeat"]
    await service.check(now=beat + 1)  # the worker may still report its last exits
    a = (await store.slurm.allocations(wf))[0]
    assert (a.state, a.slurm_state) == ("done", "TIMEOUT") and a.ended is not None
    assert (await store.workers.worker(wid))["state"] == "active"
    await service.check(now=beat + 11)
    w = await store.workers.worker(wid)
    assert (w["state"], w["reason"]) == ("lost", "Slurm ended its allocation at the time limit (TIMEOUT)")
    assert kinds(store) == [
        ("allocation_submitted", aid, None),
        ("allocation_started", aid, "RUNNING"),
        ("worker_registered", wid, None),
        ("allocation_finished", aid, "TIMEOUT"),
        ("worker_lost", wid, None),
    ]


async def test_a_worker_registering_starts_a_pending_allocation_and_one_gone_from_the_queue_ends(
    store, tmp_path, queue
):
    wf, aid, service = await allocation(store, tmp_path, queue)
    wid = await store.workers.register_worker(wf, aid, "n1", 4)
    a = (await store.slurm.allocations(wf))[0]
    assert (a.state, a.slurm_state) == ("running", None) and a.started is not None
    await service.check()  # squeue no longer knows it
    a = (await store.slurm.allocations(wf))[0]
    assert (a.state, a.slurm_state) == ("done", "GONE")
    await store.workers.finish_worker(wid, "idle")
    await store.workers.finish_worker(wid, "again", "lost")  # closed once only
    w = await store.workers.worker(wid)
    assert (w["state"], w["reason"]) == ("done", "idle")
    assert [k for k, _, _ in kinds(store)] == [
        "allocation_submitted",
        "allocation_started",
        "worker_registered",
        "allocation_finished",
        "worker_finished",
    ]
    assert WORKER_LOST_RC == 137


async def test_a_failed_submission_is_final(store, tmp_path, queue):
    wf = await store.workflows.create_workflow(
        parse_spec(SPEC, "spec.yaml"), str(tmp_path), "spec.yaml", executor="slurm"
    )
    aid = await store.slurm.add_allocation(wf, "one", 4, "r", False)
    await store.slurm.allocation_submitted(aid, None, "a.sh", "sbatch: error: no account")
    a = (await store.slurm.allocations(wf))[0]
    assert (a.state, a.reason) == ("failed", "sbatch: error: no account") and a.ended is not None
    assert [(e.kind, e.allocation_id, e.message) for e in store.published if e.kind.startswith("allocation")] == [
        ("allocation_failed", aid, "sbatch: error: no account")
    ]


async def test_an_allocation_queued_for_a_workflow_that_is_done_is_cancelled(store, tmp_path, queue):
    cancelled: list[str] = []
    wf, aid, service = await allocation(store, tmp_path, queue, cancelled)
    queue["812"] = "PENDING"
    await service.check()  # its job may still run: it stays queued
    assert cancelled == [] and (await store.slurm.allocations(wf))[0].state == "pending"
    await store.workflows.cancel_workflow(wf)  # every job final now
    await service.check()
    (a,) = await store.slurm.allocations(wf)
    assert cancelled == ["812"] and (a.state, a.slurm_state) == ("done", "CANCELLED")
    await service.check()
    assert cancelled == ["812"]  # asked once


async def test_a_job_awaiting_classification_keeps_the_queued_allocation(store, tmp_path, queue):
    cancelled: list[str] = []
    wf, aid, service = await allocation(store, tmp_path, queue, cancelled)
    queue["812"] = "PENDING"
    await store.db.write(lambda tx: tx.run("UPDATE jobs SET status = 10 WHERE workflow_id = ?", (wf,)))
    await service.check()  # pending_failed: a retry may want it
    assert cancelled == [] and (await store.slurm.allocations(wf))[0].state == "pending"


async def test_workers_told_to_wait_past_the_end_keep_their_queued_allocations(store, tmp_path, queue):
    cancelled: list[str] = []
    spec = SPEC + "compute_node_ignore_workflow_completion: true\n"
    wf, aid, service = await allocation(store, tmp_path, queue, cancelled, spec)
    queue["812"] = "PENDING"
    await store.workflows.cancel_workflow(wf)
    await service.check()
    assert cancelled == [] and (await store.slurm.allocations(wf))[0].state == "pending"
