"""The job-status transition table, checked pair by pair."""

import itertools

import pytest

from torcd.core.status import ALLOWED, can_transition, check_transition
from torcd.core.status import JobStatus as S
from torcd.errors import InvalidTransition

EXPECTED = {
    (S.UNINITIALIZED, S.BLOCKED),
    (S.UNINITIALIZED, S.READY),
    (S.UNINITIALIZED, S.CANCELED),
    (S.UNINITIALIZED, S.DISABLED),
    (S.BLOCKED, S.READY),
    (S.BLOCKED, S.CANCELED),
    (S.READY, S.PENDING),
    (S.READY, S.RUNNING),
    (S.READY, S.CANCELED),
    (S.READY, S.BLOCKED),
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.READY),
    (S.PENDING, S.CANCELED),
    (S.PENDING, S.TERMINATED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.TERMINATED),
    (S.RUNNING, S.CANCELED),
    (S.RUNNING, S.READY),
    (S.RUNNING, S.RECOVERING),
    (S.RUNNING, S.PENDING_FAILED),
    (S.RECOVERING, S.READY),
    (S.RECOVERING, S.FAILED),
    (S.RECOVERING, S.CANCELED),
    (S.PENDING_FAILED, S.READY),
    (S.PENDING_FAILED, S.FAILED),
    (S.PENDING_FAILED, S.CANCELED),
    (S.PENDING_FAILED, S.BLOCKED),
    *(
        (final, target)
        for final in (S.COMPLETED, S.FAILED, S.CANCELED, S.TERMINATED)
        for target in (S.BLOCKED, S.READY)
    ),
}


def test_status_numbers_match_upstream_torc():
    assert [(s.label, int(s)) for s in S] == [
        ("uninitialized", 0),
        ("blocked", 1),
        ("ready", 2),
        ("pending", 3),
        ("running", 4),
        ("completed", 5),
        ("failed", 6),
        ("canceled", 7),
        ("terminated", 8),
        ("disabled", 9),
        ("pending_failed", 10),
        ("recovering", 11),
    ]


@pytest.mark.parametrize("old,new", list(itertools.product(S, S)))
def test_every_pair_is_allowed_exactly_when_listed(old, new):
    allowed = (old, new) in EXPECTED
    assert can_transition(old, new) is allowed
    if allowed:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"{old.label} to {new.label}"):
            check_transition(old, new, job_id=7)


def test_table_covers_every_status():
    assert set(ALLOWED) == set(S)


def test_a_finished_job_never_goes_back_to_running_directly():
    for s in (S.COMPLETED, S.FAILED, S.CANCELED, S.TERMINATED):
        assert not can_transition(s, S.RUNNING)


def test_parse_status_names():
    assert S.parse("pending_failed") is S.PENDING_FAILED
    with pytest.raises(ValueError, match="unknown status 'done'"):
        S.parse("done")
