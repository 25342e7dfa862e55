"""The dispatcher's pace (core.pacing), as tables on a fake clock: how far it claims ahead, and
when a pass may wait to gather more starts and exits."""

from __future__ import annotations

import pytest

from torcd.core.pacing import GATHER_S, HORIZON_S, MAX_AHEAD, Pace


@pytest.mark.parametrize(
    "max_cpus,starts,ahead",
    [
        (4, [], 4),  # nothing started: one budget's worth
        (4, [0.0] * 3, 4),  # a slow pace: still the budget
        (2, [0.0] * 22, 22),  # a flood of short jobs: what the horizon started
        (2, [0.0] * 5000, MAX_AHEAD),  # bounded
        (2, [-HORIZON_S - 0.001] * 30 + [0.0] * 3, 3),  # starts older than the horizon no longer count
    ],
)
def test_claims_ahead_what_the_recent_pace_starts(max_cpus, starts, ahead):
    pace = Pace(max_cpus)
    for at in starts:
        pace.started(at)
    assert pace.ahead(now=0.0) == ahead


def test_the_pace_falls_back_to_the_budget_once_starts_stop():
    pace = Pace(2)
    for k in range(40):
        pace.started(k * 0.0005)
    assert pace.ahead(now=0.02) == 40
    assert pace.ahead(now=0.02 + HORIZON_S + 0.001) == 2


@pytest.mark.parametrize(
    "queued,urgent,wait",
    [
        (5, False, GATHER_S),  # queued jobs keep the slots busy: gather
        (0, False, 0.0),  # nothing queued: claim now
        (5, True, 0.0),  # something new is ready (or stopping): at once
        (0, True, 0.0),
    ],
)
def test_a_pass_waits_only_while_queued_jobs_keep_the_slots_busy(queued, urgent, wait):
    assert Pace.gather(queued, urgent) == wait
