"""Allocations and workers, in-process: every status pair, and for each observation in each status
the exact decision and events. No daemon, no Slurm; every change is checked against the tables."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from torcd import events as E
from torcd.core import allocations as A
from torcd.core.allocations import ALLOWED, WORKER_ALLOWED
from torcd.core.allocations import AllocationStatus as AS
from torcd.core.allocations import WorkerStatus as WS
from torcd.errors import InvalidTransition

T = 1000.0


def alloc(status: AS, started: float | None = None) -> A.Allocation:
    return A.Allocation(5, 3, status, "812", 4, "submitted by torcctl", started)


def worker(status: WS = WS.ACTIVE, beat: float = T - 1, allocation_id: int | None = 5) -> A.Worker:
    return A.Worker(9, 3, status, allocation_id, beat)


def test_the_statuses_are_the_strings_the_database_holds():
    assert [s.value for s in AS] == ["pending", "running", "done", "failed"]
    assert [s.value for s in WS] == ["active", "done", "lost"]


@pytest.mark.parametrize("old,new", list(itertools.product(AS, AS)))
def test_every_allocation_status_pair(old, new):
    allowed = {(AS.PENDING, AS.RUNNING), (AS.PENDING, AS.DONE), (AS.PENDING, AS.FAILED), (AS.RUNNING, AS.DONE)}
    assert (new in ALLOWED[old]) == ((old, new) in allowed)
    if (old, new) in allowed:
        A.check_transition(old, new, 5)
    else:
        with pytest.raises(InvalidTransition, match=f"allocation 5: cannot go from {old.value} to {new.value}"):
            A.check_transition(old, new, 5)


@pytest.mark.parametrize("old,new", list(itertools.product(WS, WS)))
def test_every_worker_status_pair(old, new):
    allowed = {(WS.ACTIVE, WS.DONE), (WS.ACTIVE, WS.LOST)}
    assert (new in WORKER_ALLOWED[old]) == ((old, new) in allowed)
    if (old, new) in allowed:
        A.check_worker_transition(old, new, 9)
    else:
        with pytest.raises(InvalidTransition, match=f"worker 9: cannot go from {old.value} to {new.value}"):
            A.check_worker_transition(old, new, 9)


@pytest.mark.parametrize(
    "seen,status",
    [
        ("PENDING", AS.PENDING),
        ("CONFIGURING", AS.PENDING),
        ("REQUEUED", AS.PENDING),
        ("SUSPENDED", AS.PENDING),
        ("RUNNING", AS.RUNNING),
        ("COMPLETING", AS.RUNNING),
        ("STAGE_OUT", AS.RUNNING),
        ("COMPLETED", AS.DONE),
        ("FAILED", AS.DONE),
        ("CANCELLED", AS.DONE),
        ("TIMEOUT", AS.DONE),
        ("NODE_FAIL", AS.DONE),
        ("OUT_OF_MEMORY", AS.DONE),
        (None, AS.DONE),
    ],
)
def test_what_squeue_says_as_a_status(seen, status):
    assert A.queue_status(seen) == status


SILENCE = {"heartbeat_timeout": 60.0, "poll_interval": 5.0, "daemon_started": 0.0, "wait_for_daemon": 600.0}


def silence(**kw) -> A.SilenceChecked:
    return A.SilenceChecked(T, **{**SILENCE, **kw})


# (observation, facts before, new status or None, event kinds, other fields of the decision)
CASES = [
    # sbatch's answer
    (A.Submitted(T, "812"), alloc(AS.PENDING), None, ["allocation_submitted"], {}),
    (
        A.SubmitFailed(T, "sbatch: error"),
        alloc(AS.PENDING),
        AS.FAILED,
        ["allocation_failed"],
        {"ended": T, "reason": "sbatch: error"},
    ),
    # the queue
    (A.QueueSeen(T, "PENDING"), alloc(AS.PENDING), None, [], {}),
    (
        A.QueueSeen(T, "RUNNING"),
        alloc(AS.PENDING),
        AS.RUNNING,
        ["allocation_started"],
        {"started": T, "ended": None, "slurm_state": "RUNNING"},
    ),
    (
        A.QueueSeen(T, "TIMEOUT"),
        alloc(AS.PENDING),
        AS.DONE,
        ["allocation_finished"],
        {"started": None, "ended": T, "slurm_state": "TIMEOUT"},
    ),
    (A.QueueSeen(T, None), alloc(AS.PENDING), AS.DONE, ["allocation_finished"], {"slurm_state": "GONE"}),
    (A.QueueSeen(T, "RUNNING"), alloc(AS.RUNNING, 900.0), None, [], {}),
    (A.QueueSeen(T, "REQUEUED"), alloc(AS.RUNNING, 900.0), None, [], {}),  # a requeue is not a restart
    (
        A.QueueSeen(T, "COMPLETED"),
        alloc(AS.RUNNING, 900.0),
        AS.DONE,
        ["allocation_finished"],
        {"started": 900.0, "ended": T, "slurm_state": "COMPLETED"},
    ),
    (A.QueueSeen(T, None), alloc(AS.RUNNING, 900.0), AS.DONE, ["allocation_finished"], {"slurm_state": "GONE"}),
    (A.QueueSeen(T, "RUNNING"), alloc(AS.DONE), None, [], {}),
    (A.QueueSeen(T, "PENDING"), alloc(AS.FAILED), None, [], {}),
    # a worker of it registers
    (A.WorkerJoined(T, 9, "n1"), alloc(AS.PENDING), AS.RUNNING, ["allocation_started"], {"started": T}),
    (A.WorkerJoined(T, 9, "n1"), alloc(AS.RUNNING, 900.0), None, [], {}),
    (A.WorkerJoined(T, 9, "n1"), alloc(AS.DONE), None, [], {}),
    # workers
    (A.Registered(T, "n1", 8), worker(beat=T), None, ["worker_registered"], {}),
    (A.ResumeAsked(T, 3, 5, "n2"), worker(beat=T - 10), None, ["worker_registered"], {}),
    (A.ResumeAsked(T, 3, 5, "n2"), worker(beat=T - 1), None, [], {}),  # still heard from: not taken over
    (A.ResumeAsked(T, 3, 6, "n2"), worker(beat=T - 10), None, [], {}),  # another allocation's
    (A.ResumeAsked(T, 4, 5, "n2"), worker(beat=T - 10), None, [], {}),  # another workflow's
    (A.ResumeAsked(T, 3, 5, "n2"), worker(WS.LOST, beat=T - 10), None, [], {}),
    (A.FinishReported(T, "idle", 0), worker(), WS.DONE, [], {"reason": "idle"}),
    (A.FinishReported(T, "idle", 2), worker(), WS.LOST, [], {"reason": "finished with jobs running: idle"}),
    (A.FinishReported(T, "idle", 2), worker(WS.LOST), WS.LOST, [], {}),  # its jobs are lost all the same
    (A.Closed(T, WS.DONE, "idle"), worker(), WS.DONE, ["worker_finished"], {"ended": T, "reason": "idle"}),
    (A.Closed(T, WS.LOST, "gone"), worker(), WS.LOST, ["worker_lost"], {"ended": T, "reason": "gone"}),
    (A.Closed(T, WS.DONE, "idle"), worker(WS.DONE), None, [], {}),
    (A.Closed(T, WS.LOST, "gone"), worker(WS.LOST), None, [], {}),
    # the periodic check
    (silence(), worker(beat=T - 30), None, [], {}),
    (silence(), worker(beat=T - 61), WS.LOST, [], {"reason": "no heartbeat for 61s", "cause": None}),
    (
        silence(allocation=AS.DONE, verdict="TIMEOUT"),
        worker(beat=T - 11),
        WS.LOST,
        [],
        {"reason": "Slurm ended its allocation at the time limit (TIMEOUT)", "cause": "timeout"},
    ),
    (silence(allocation=AS.DONE, verdict="OUT_OF_MEMORY"), worker(beat=T - 11), WS.LOST, [], {"cause": "oom"}),
    (
        silence(allocation=AS.DONE, verdict="NODE_FAIL"),
        worker(beat=T - 11),
        WS.LOST,
        [],
        {"reason": "its node failed (NODE_FAIL)", "cause": None},
    ),
    (
        silence(allocation=AS.DONE),
        worker(beat=T - 11),
        WS.LOST,
        [],
        {"reason": "its allocation left the Slurm queue (GONE)"},
    ),
    (silence(allocation=AS.DONE), worker(beat=T - 9), None, [], {}),  # may still report its last exits
    (silence(allocation=AS.RUNNING), worker(beat=T - 30), None, [], {}),
    # silent since before this daemon started, which started recently: it gets its window to come back
    (silence(daemon_started=T - 100), worker(beat=T - 200), None, [], {}),
    (silence(daemon_started=T - 700), worker(beat=T - 800), WS.LOST, [], {"reason": "no heartbeat for 800s"}),
    (silence(daemon_started=T - 100, allocation=AS.DONE), worker(beat=T - 200), WS.LOST, [], {}),
    (silence(), worker(WS.DONE, beat=0.0), None, [], {}),
    (silence(), worker(WS.LOST, beat=0.0), None, [], {}),
]


@pytest.mark.parametrize(
    "observation,before,status,kinds,fields",
    CASES,
    ids=[f"{type(c[0]).__name__}-{c[1].status.value}-{i}" for i, c in enumerate(CASES)],
)
def test_each_observation(observation, before, status, kinds, fields):
    d = A.handle(observation, before)
    assert d.status == status
    if status is not None and status != before.status:
        assert status in (ALLOWED if isinstance(status, AS) else WORKER_ALLOWED)[before.status]
    assert [e.kind for e in d.events] == kinds
    for e in d.events:  # every event names its workflow and is stamped with the observation's time
        assert (e.workflow_id, e.time) == (before.workflow_id, T)
    for name, value in fields.items():
        assert getattr(d, name) == value, name
    if status is None and not kinds:
        assert d.ignored


def test_the_events_name_the_allocation_and_worker():
    (started,) = A.handle(A.QueueSeen(T, "RUNNING"), alloc(AS.PENDING)).events
    assert isinstance(started, E.AllocationStarted)
    assert (started.allocation_id, started.status, started.message) == (5, "RUNNING", "slurm job 812")
    (joined,) = A.handle(A.WorkerJoined(T, 9, "n1"), alloc(AS.PENDING)).events
    assert (joined.allocation_id, joined.status, joined.message) == (5, None, "worker 9 on n1")
    (submitted,) = A.handle(A.Submitted(T, "812"), alloc(AS.PENDING)).events
    assert submitted.message == "slurm job 812, 4 cpus: submitted by torcctl"
    (registered,) = A.handle(A.Registered(T, "n1", 8), worker()).events
    assert (registered.worker_id, registered.message) == (9, "n1, 8 cpus, allocation 5")
    (resumed,) = A.handle(A.ResumeAsked(T, 3, 5, "n2"), worker(beat=T - 10)).events
    assert (resumed.worker_id, resumed.message) == (9, "n2: resumed from its journal")
    (lost,) = A.handle(A.Closed(T, WS.LOST, "gone"), worker()).events
    assert isinstance(lost, E.WorkerLost) and (lost.worker_id, lost.message) == (9, "gone")


def test_sbatchs_error_after_a_worker_started_the_allocation_changes_nothing():
    d = A.handle(A.SubmitFailed(T, "sbatch: timed out"), alloc(AS.RUNNING))
    assert d.status is None and not d.events and "came too late" in (d.ignored or "")


def test_a_refused_change_raises():
    with pytest.raises(InvalidTransition):
        A.handle(A.Closed(T, WS.ACTIVE, "again"), worker())


@pytest.mark.parametrize("status", list(AS))
def test_open_means_pending_or_running(status):
    assert A.is_open(status.value) == (status in (AS.PENDING, AS.RUNNING))
    assert not A.is_open(None)


# The JSON each kind had when every kind shared one field list: old rows decode, and encode again
# to the same bytes (the allocation and worker ids, and job counts, stay under `count`).
OLD_ROWS = [
    '{"kind":"workflow_created","workflow_id":1,"time":1.5,"seq":9,"message":"n","count":3}',
    '{"kind":"workflow_reset","workflow_id":1,"time":1.5,"seq":9,"run_id":2,"message":"m","count":3}',
    '{"kind":"workflow_canceled","workflow_id":1,"time":1.5,"seq":9,"count":4}',
    '{"kind":"workflow_done","workflow_id":1,"time":1.5,"seq":9,"status":"completed","message":"s"}',
    '{"kind":"job_ready","workflow_id":1,"time":2.0,"job_id":7,"job_name":"w_7"}',
    (
        '{"kind":"job_completed","workflow_id":1,"time":1.5,"seq":9,"job_id":7,"job_name":"w_7","run_id":1,'
        '"attempt_id":1,"status":"completed","return_code":0}'
    ),
    (
        '{"kind":"job_failed","workflow_id":1,"time":1.5,"seq":9,"job_id":7,"job_name":"w_7","status":"failed",'
        '"message":"2 downstream jobs canceled","count":2}'
    ),
    (
        '{"kind":"job_resources_changed","workflow_id":1,"time":1.5,"seq":9,"job_id":7,"job_name":"w_7",'
        '"message":"m","source":"mcp","resource":"memory","old_value":1.0,"new_value":2.5}'
    ),
    (
        '{"kind":"retry_decided","workflow_id":1,"time":1.5,"seq":9,"job_id":7,"job_name":"w_7","run_id":1,'
        '"attempt_id":1,"status":"ready","return_code":10,"rule_index":0,"action":"retry","message":"b"}'
    ),
    '{"kind":"allocation_submitted","workflow_id":1,"time":1.5,"seq":9,"message":"slurm job 12","count":5}',
    (
        '{"kind":"allocation_started","workflow_id":1,"time":1.5,"seq":9,"status":"RUNNING","message":"slurm job 1",'
        '"count":5}'
    ),
    '{"kind":"allocation_finished","workflow_id":1,"time":1.5,"seq":9,"status":"TIMEOUT","message":"x","count":5}',
    (
        '{"kind":"auto_schedule_decided","workflow_id":1,"time":1.5,"seq":9,"rule_index":1,"action":"submit",'
        '"message":"w"}'
    ),
    '{"kind":"worker_registered","workflow_id":1,"time":1.5,"seq":9,"message":"h","count":3}',
    '{"kind":"worker_lost","workflow_id":1,"time":1.5,"seq":9,"message":"r","count":3}',
    (
        '{"kind":"action_finished","workflow_id":1,"time":1.5,"seq":9,"run_id":1,"status":"done","return_code":0,'
        '"rule_index":0,"action":"run_commands","message":"m"}'
    ),
]


@pytest.mark.parametrize("row", OLD_ROWS)
def test_old_event_rows_decode_and_encode_the_same(row):
    event = msgspec.json.decode(row, type=E.Event)
    assert msgspec.json.encode(event).decode() == row


def test_the_honest_names_read_the_old_keys():
    lost = msgspec.json.decode(OLD_ROWS[-2], type=E.Event)
    assert isinstance(lost, E.WorkerLost) and lost.worker_id == 3
    started = msgspec.json.decode(OLD_ROWS[10], type=E.Event)
    assert isinstance(started, E.AllocationStarted) and started.allocation_id == 5
    created = msgspec.json.decode(OLD_ROWS[0], type=E.Event)
    assert isinstance(created, E.WorkflowCreated) and created.job_count == 3


ALLOCATION_OBSERVATIONS = [
    A.Submitted(T, "812"),
    A.SubmitFailed(T, "e"),
    A.WorkerJoined(T, 9, "n1"),
    *(A.QueueSeen(T, s) for s in ("PENDING", "RUNNING", "COMPLETED", None)),
]
WORKER_OBSERVATIONS = [
    A.ResumeAsked(T, 3, 5, "n2"),
    A.FinishReported(T, "idle", 0),
    A.FinishReported(T, "idle", 1),
    A.Closed(T, WS.DONE, "idle"),
    A.Closed(T, WS.LOST, "gone"),
    silence(),
    silence(allocation=AS.DONE),
]


@pytest.mark.parametrize("observation,status", list(itertools.product(ALLOCATION_OBSERVATIONS, AS)))
def test_each_allocation_observation_in_each_status(observation, status):
    """Either no status changes (it says why, or only emits), or a change the table allows."""
    d = A.handle(observation, alloc(status))
    assert (d.status is None and (d.ignored is not None or d.events)) or d.status in ALLOWED[status]
    if status not in A.OPEN:  # an allocation that ended is never changed again
        assert d.status is None and not d.events


@pytest.mark.parametrize("observation,status", list(itertools.product(WORKER_OBSERVATIONS, WS)))
def test_each_worker_observation_in_each_status(observation, status):
    d = A.handle(observation, worker(status, beat=0.0))
    if isinstance(observation, A.FinishReported):  # a verdict, applied by Closed (which checks the status)
        assert d.status in (WS.DONE, WS.LOST)
        return
    assert (d.status is None and (d.ignored is not None or d.events)) or d.status in WORKER_ALLOWED[status]
    if status != WS.ACTIVE:
        assert d.status is None and not d.events
