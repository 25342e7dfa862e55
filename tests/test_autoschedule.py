"""The auto-schedule decision with a fake clock: each rule, the cooldown, the stranded timeout."""

import pytest

from torcd.core.autoschedule import AutoSchedulePolicy, ScheduleInputs, decide_auto_schedule

ON = AutoSchedulePolicy(enabled=True, threshold=5, cooldown=1800, stranded_timeout=7200)
NO_RULE_3 = AutoSchedulePolicy(enabled=True, threshold=5, cooldown=1800, stranded_timeout=0)
SHORT_3 = AutoSchedulePolicy(enabled=True, threshold=5, cooldown=1800, stranded_timeout=600)
T0 = 1_000_000.0


def inputs(ready=0, retry=0, oldest=None, running=0, pending=0, last=None):
    return ScheduleInputs(ready, retry, oldest, running, pending, last)


@pytest.mark.parametrize(
    "policy,s,now,rule",
    [
        (AutoSchedulePolicy(enabled=False), inputs(ready=3), T0, None),
        (ON, inputs(ready=0), T0, None),
        (ON, inputs(ready=3), T0, 1),  # rule 1: ready jobs, no allocations
        (ON, inputs(ready=3, retry=3, oldest=T0 - 10, last=T0 - 1), T0, 1),  # rule 1 ignores the cooldown
        (ON, inputs(ready=3, pending=1), T0, None),  # something is queued already
        (ON, inputs(ready=6, retry=5, running=2), T0, 2),  # rule 2: threshold reached
        (ON, inputs(ready=6, retry=4, running=2, oldest=T0 - 60), T0, None),  # below threshold, not stranded
        (ON, inputs(ready=6, retry=5, running=2, last=T0 - 1799), T0, None),  # cooldown not over
        (ON, inputs(ready=6, retry=5, running=2, last=T0 - 1800), T0, 2),  # cooldown just over
        (ON, inputs(ready=1, retry=1, running=1, oldest=T0 - 7201), T0, 3),  # rule 3: stranded
        (ON, inputs(ready=1, retry=1, running=1, oldest=T0 - 7200), T0, None),  # exactly at the timeout
        # compute asked for 5 s ago (its worker may not be polling yet): the wait starts again
        (ON, inputs(ready=1, retry=1, running=1, oldest=T0 - 7201, last=T0 - 5), T0, None),
        (ON, inputs(ready=1, retry=1, running=1, oldest=T0 - 9000, last=T0 - 7201), T0, 3),
        # a stranded timeout shorter than the cooldown: stranded beats the cooldown
        (SHORT_3, inputs(ready=6, retry=6, running=1, oldest=T0 - 7201, last=T0 - 601), T0, 3),
        (SHORT_3, inputs(ready=6, retry=6, running=1, oldest=T0 - 7201, last=T0 - 599), T0, None),
        (ON, inputs(ready=6, retry=6, running=1, oldest=T0 - 100, last=T0 - 5), T0, None),
        # stranded timeout 0 turns rule 3 off (Torc's meaning), whatever the wait; rules 1 and 2 still apply
        (NO_RULE_3, inputs(ready=1, retry=1, running=1, oldest=T0 - 10**9), T0, None),
        (NO_RULE_3, inputs(ready=1, retry=1, running=1, oldest=T0 - 1), T0, None),
        (NO_RULE_3, inputs(ready=6, retry=6, running=1, oldest=T0 - 10**9, last=T0 - 5), T0, None),
        (NO_RULE_3, inputs(ready=6, retry=5, running=2), T0, 2),
        (NO_RULE_3, inputs(ready=3), T0, 1),
        (ON, inputs(ready=4, retry=0, running=1), T0, None),  # first attempts wait for running allocations
    ],
)
def test_decision(policy, s, now, rule):
    d = decide_auto_schedule(policy, s, now)
    assert d.rule == rule and d.submit is (rule is not None)
    assert d.reason


def test_cooldown_over_a_fake_clock():
    """Submitting at most once per cooldown while the threshold stays reached."""
    last, submissions = None, []
    for minute in range(0, 121):
        now = T0 + 60 * minute
        d = decide_auto_schedule(ON, inputs(ready=9, retry=9, running=1, last=last), now)
        if d.submit:
            submissions.append(minute)
            last = now
    assert submissions == [0, 30, 60, 90, 120]
