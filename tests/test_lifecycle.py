"""The job lifecycle, in-process: for each stimulus from each relevant status, the exact change,
records, events and follow-ups. No daemon; every outcome is checked against the status table."""

from __future__ import annotations

import msgspec
import pytest

from torcd import events as E
from torcd.core import lifecycle as L
from torcd.core.retry import Action, RetryDecision
from torcd.core.status import ALLOWED
from torcd.core.status import JobStatus as S
from torcd.errors import InvalidTransition

T = 1000.0


def job(status: S, run: int = 1, attempt: int = 1, **kw) -> L.Job:
    return L.Job(7, 3, "work_7", status, run, attempt, **kw)


def decision(action: Action, rule: int | None = 0) -> RetryDecision:
    return RetryDecision(action, rule, f"because {action.value}")


# (stimulus, job before, (new status, attempt, run) or None, event kinds, instruction kinds, record kinds)
CASES = [
    # claims
    (L.Claimed(T), job(S.READY), (S.PENDING, 1, 1), [], [], []),
    (L.Claimed(T, worker_id=4, host="n1"), job(S.READY), (S.RUNNING, 1, 1), ["job_started"], [], ["AttemptOpened"]),
    (
        L.Claimed(T, worker_id=4, host="n1"),
        job(S.READY, 2, 3),
        (S.RUNNING, 3, 2),
        ["job_started"],
        [],
        ["AttemptOpened"],
    ),
    # starts
    (L.Started(T, 1, 1, "h", 99), job(S.PENDING), (S.RUNNING, 1, 1), ["job_started"], [], ["AttemptOpened"]),
    (L.Started(T, 1, 2, "h", 99), job(S.PENDING, 1, 2), (S.RUNNING, 2, 1), ["job_started"], [], ["AttemptOpened"]),
    (L.Started(T, 1, 1, "h", 99), job(S.RUNNING), None, [], [], []),  # reported twice: its attempt is open
    (L.Started(T, 1, 1, "h", 99), job(S.CANCELED), None, [], ["StopProcess"], []),
    (L.Started(T, 1, 1, "h", 99), job(S.PENDING, 2, 1), None, [], ["StopProcess"], []),  # reset meanwhile
    # requeue
    (L.Requeued(T), job(S.PENDING), (S.READY, 1, 1), [], [], []),
    (L.Requeued(T), job(S.RUNNING), None, [], [], []),
    # exits
    (
        L.Exited(T, 1, 1, 0),
        job(S.RUNNING),
        (S.COMPLETED, 1, 1),
        ["job_completed"],
        ["ReleaseDependents"],
        ["AttemptClosed"],
    ),
    (L.Exited(T, 1, 1, 10, "boom"), job(S.RUNNING), None, ["job_exited"], [], ["AttemptClosed"]),
    (L.Exited(T, 1, 1, 137), job(S.RUNNING), None, ["job_exited"], [], ["AttemptClosed"]),
    (L.Exited(T, 1, 1, 0), job(S.CANCELED), None, [], [], ["AttemptClosed"]),
    (L.Exited(T, 1, 1, 0), job(S.RUNNING, 1, 2), None, [], [], ["AttemptClosed"]),  # an older attempt
    (L.Exited(T, 1, 1, 0), job(S.RUNNING, 2, 1), None, [], [], ["AttemptClosed"]),  # an older run
    (L.Exited(T, 1, 1, 3), job(S.TERMINATED), None, [], [], ["AttemptClosed"]),
    # shutdown
    (
        L.Terminated(T, 1, 1, 143, "daemon shut down"),
        job(S.RUNNING),
        (S.TERMINATED, 1, 1),
        ["job_terminated"],
        [],
        ["AttemptClosed"],
    ),
    (L.Terminated(T, 1, 1, 143, "daemon shut down"), job(S.COMPLETED), None, [], [], ["AttemptClosed"]),
    # decisions
    (
        L.Decided(T, 1, 1, 10, decision(Action.RETRY)),
        job(S.RUNNING),
        (S.READY, 2, 1),
        ["retry_decided"],
        [],
        ["AttemptDecided"],
    ),
    (
        L.Decided(T, 1, 2, 10, decision(Action.RECOVER)),
        job(S.RUNNING, 1, 2),
        (S.RECOVERING, 2, 1),
        ["retry_decided"],
        [],
        ["AttemptDecided"],
    ),
    (
        L.Decided(T, 1, 3, 10, decision(Action.FAIL)),
        job(S.RUNNING, 1, 3),
        (S.FAILED, 3, 1),
        ["retry_decided"],
        ["CancelDownstream"],
        ["AttemptDecided"],
    ),
    (
        L.Decided(T, 1, 1, 1, decision(Action.PARK, None)),
        job(S.RUNNING),
        (S.PENDING_FAILED, 1, 1),
        ["retry_decided"],
        [],
        ["AttemptDecided"],
    ),
    (L.Decided(T, 1, 1, 10, decision(Action.RETRY)), job(S.CANCELED), None, [], [], []),
    (L.Decided(T, 1, 1, 10, decision(Action.RETRY)), job(S.READY, 1, 2), None, [], [], []),  # decided already
    # recovery scripts
    (
        L.RecoveryDone(T, 1, 1, True, 0, "ok"),
        job(S.RECOVERING),
        (S.READY, 2, 1),
        ["recovery_finished"],
        [],
        ["RecoveryRecorded"],
    ),
    (
        L.RecoveryDone(T, 1, 1, False, 3, "exited 3"),
        job(S.RECOVERING),
        (S.FAILED, 1, 1),
        ["recovery_finished"],
        ["CancelDownstream"],
        ["RecoveryRecorded"],
    ),
    (
        L.RecoveryDone(T, 1, 1, False, None, "timed out"),
        job(S.RECOVERING),
        (S.FAILED, 1, 1),
        ["recovery_finished"],
        ["CancelDownstream"],
        ["RecoveryRecorded"],
    ),
    (L.RecoveryDone(T, 1, 1, True, 0, "ok"), job(S.CANCELED), None, [], [], []),
    (L.RecoveryDone(T, 1, 1, True, 0, "ok"), job(S.RECOVERING, 1, 2), None, [], [], []),
    # classification
    (L.Classified(T, "retry", "fixed it", "cli"), job(S.PENDING_FAILED), (S.READY, 2, 1), ["job_classified"], [], []),
    (
        L.Classified(T, "fail", "", "mcp"),
        job(S.PENDING_FAILED, 1, 2),
        (S.FAILED, 2, 1),
        ["job_classified"],
        ["CancelDownstream"],
        [],
    ),
    # cancel
    (L.Canceled(T), job(S.READY), (S.CANCELED, 1, 1), [], [], []),
    (L.Canceled(T), job(S.BLOCKED), (S.CANCELED, 1, 1), [], [], []),
    (L.Canceled(T), job(S.PENDING), (S.CANCELED, 1, 1), [], ["StopProcess"], []),
    (L.Canceled(T), job(S.RUNNING), (S.CANCELED, 1, 1), [], ["StopProcess"], []),
    (L.Canceled(T), job(S.RECOVERING), (S.CANCELED, 1, 1), [], ["StopProcess"], []),
    (L.Canceled(T), job(S.PENDING_FAILED), (S.CANCELED, 1, 1), [], [], []),
    (L.Canceled(T), job(S.COMPLETED), None, [], [], []),
    (L.Canceled(T), job(S.FAILED), None, [], [], []),
    # reset
    (L.Reset(T, 2, False), job(S.COMPLETED, 1, 3), (S.READY, 1, 2), [], [], []),
    (L.Reset(T, 2, True), job(S.FAILED), (S.BLOCKED, 1, 2), [], [], []),
    (L.Reset(T, 2, False), job(S.PENDING_FAILED, 1, 2), (S.READY, 1, 2), [], [], []),
    (L.Reset(T, 2, True), job(S.CANCELED), (S.BLOCKED, 1, 2), [], [], []),
    (L.Reset(T, 2, True), job(S.BLOCKED), (S.BLOCKED, 1, 2), [], [], []),
    (L.Reset(T, 2, False), job(S.BLOCKED), (S.READY, 1, 2), [], [], []),
    (L.Reset(T, 2, False), job(S.RUNNING), None, [], [], []),
    # dependencies
    (L.DependenciesMet(T), job(S.BLOCKED), (S.READY, 1, 1), ["job_ready"], [], []),
    (L.DependenciesMet(T), job(S.CANCELED), None, [], [], []),
    (L.UpstreamFailed(T, 1, "pre"), job(S.BLOCKED), (S.CANCELED, 1, 1), [], [], []),
    (L.UpstreamFailed(T, 1, "pre"), job(S.UNINITIALIZED), (S.CANCELED, 1, 1), [], [], []),
    (L.UpstreamFailed(T, 1, "pre"), job(S.COMPLETED), None, [], [], []),
]


@pytest.mark.parametrize(
    "stimulus, before, after, events, instructions, records",
    CASES,
    ids=[f"{type(c[0]).__name__}-{c[1].status.label}-{i}" for i, c in enumerate(CASES)],
)
def test_transition(stimulus, before, after, events, instructions, records):
    out = L.handle(stimulus, before)
    if after is None:
        assert out.change is None or out.change.old == out.change.new
        if not events:
            assert out.ignored or isinstance(stimulus, L.Exited)
    else:
        new, attempt, run = after
        assert (out.change.new, out.change.attempt_id, out.change.run_id) == (new, attempt, run)
        assert out.change.old == before.status and out.ignored is None
        assert new == before.status or new in ALLOWED[before.status]
    assert [e.kind for e in out.events] == events
    assert [type(i).__name__ for i in out.instructions] == instructions
    assert [type(r).__name__ for r in out.records] == records
    for e in out.events:  # every event names its workflow and job, and is stamped with the stimulus's time
        assert (e.workflow_id, e.job_id, e.job_name, e.time) == (3, 7, "work_7", T)


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("status", [s for s in S if s != S.PENDING_FAILED])
def test_classifying_a_job_that_is_not_parked_is_refused(status):
    with pytest.raises(InvalidTransition, match=f"is {status.label}, not pending_failed"):
        L.handle(L.Classified(T, "retry", "", "cli"), job(status))


@pytest.mark.parametrize("status", [S.BLOCKED, S.COMPLETED, S.FAILED, S.RUNNING, S.PENDING_FAILED])
def test_claiming_a_job_that_is_not_ready_is_an_illegal_transition(status):
    with pytest.raises(InvalidTransition, match=f"cannot go from {status.label}"):
        L.handle(L.Claimed(T), job(status))


def test_events_keep_their_json():
    out = L.handle(L.Decided(T, 1, 1, 10, decision(Action.RETRY)), job(S.RUNNING))
    assert msgspec.json.decode(msgspec.json.encode(out.events[0])) == {
        "kind": "retry_decided",
        "workflow_id": 3,
        "time": T,
        "job_id": 7,
        "job_name": "work_7",
        "run_id": 1,
        "attempt_id": 1,
        "return_code": 10,
        "rule_index": 0,
        "action": "retry",
        "status": "ready",
        "message": "because retry",
    }


def test_classification_reason_defaults_to_who_classified():
    out = L.handle(L.Classified(T, "fail", "", "mcp"), job(S.PENDING_FAILED))
    assert out.change.reason == "classified fail (mcp)" and out.events[0].message == ""


def test_a_decision_sets_the_reason_and_an_exit_keeps_it():
    assert L.handle(L.Decided(T, 1, 1, 10, decision(Action.RETRY)), job(S.RUNNING)).change.reason == "because retry"
    assert L.handle(L.Exited(T, 1, 1, 0), job(S.RUNNING)).change.reason == L.KEEP


def test_a_failure_cascades_from_the_failed_job_with_a_summary():
    failed = job(S.RUNNING, 1, 3)
    out = L.handle(L.Decided(T, 1, 3, 10, decision(Action.FAIL)), failed)
    assert out.instructions == [L.CancelDownstream(failed)]
    down = L.handle(L.UpstreamFailed(T, failed.id, failed.name), job(S.BLOCKED))
    assert down.change.reason == "upstream job work_7 (7) failed"
    summary = L.cascade_summary(failed, 2, T)
    assert isinstance(summary, E.JobFailed) and summary.count == 2 and summary.message == "2 downstream jobs canceled"
    assert L.cascade_summary(failed, 0, T).message is None


def test_an_exit_for_a_canceled_job_still_closes_its_attempt():
    out = L.handle(L.Exited(T, 1, 1, 0), job(S.CANCELED))
    assert out.records == [L.AttemptClosed(7, 1, 1, T, 0, None)] and out.change is None and out.ignored
