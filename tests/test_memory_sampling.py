"""When a memory sample reads the exact PSS and when the cheap RSS sum will do, as a table of
cases, then a property: a job never goes over its limit on a cheap sample."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torcd.core.memory_sampling import NEAR_LIMIT, REFRESH_AFTER, MemoryHistory, pss_needed
from torcd.core.memory_sampling import Why as W

MIB = 2**20


@pytest.mark.parametrize(
    "rss,history,why",
    [
        (10 * MIB, MemoryHistory(None), W.FIRST),
        (10 * MIB, MemoryHistory(100 * MIB), W.FIRST),
        (10 * MIB, MemoryHistory(None, rss_peak=10 * MIB, exact_samples=1), W.CHEAP),  # the same as the peak
        (9 * MIB, MemoryHistory(None, rss_peak=10 * MIB, exact_samples=1), W.CHEAP),
        (10 * MIB + 1, MemoryHistory(None, rss_peak=10 * MIB, exact_samples=1), W.NEW_PEAK),
        (79 * MIB, MemoryHistory(100 * MIB, rss_peak=90 * MIB, exact_samples=1), W.CHEAP),
        (80 * MIB, MemoryHistory(100 * MIB, rss_peak=90 * MIB, exact_samples=1), W.NEAR_LIMIT),
        (85 * MIB, MemoryHistory(100 * MIB, rss_peak=90 * MIB, exact_samples=5), W.NEAR_LIMIT),  # below its peak
        (200 * MIB, MemoryHistory(100 * MIB, rss_peak=90 * MIB, exact_samples=1), W.NEAR_LIMIT),
        (5 * MIB, MemoryHistory(None, rss_peak=9 * MIB, exact_samples=1, since_exact=REFRESH_AFTER - 1), W.CHEAP),
        (5 * MIB, MemoryHistory(None, rss_peak=9 * MIB, exact_samples=1, since_exact=REFRESH_AFTER), W.REFRESH),
        (0, MemoryHistory(None, rss_peak=9 * MIB, exact_samples=1), W.CHEAP),
    ],
)
def test_pss_is_read_first_at_a_new_peak_near_the_limit_and_now_and_then(rss, history, why):
    decision = pss_needed(rss, history)
    assert decision.why == why and decision.needed == (why != W.CHEAP)


def test_a_job_growing_one_step_at_a_time_is_read_exactly_at_each_step_then_cheaply():
    history, taken = MemoryHistory(None), []
    for rss in (10, 20, 30, 30, 25, 30, 31):
        decision = pss_needed(rss, history)
        history.record(rss, decision.needed)
        taken.append(decision.needed)
    assert taken == [True, True, True, False, False, False, True]


@given(
    limit=st.none() | st.integers(1, 10**9),
    steps=st.lists(st.tuples(st.integers(0, 10**9), st.floats(0.0, 1.0)), min_size=1, max_size=50),
)
def test_a_cheap_sample_is_never_near_the_limit_nor_above_the_highest_rss(limit, steps):
    """PSS is never above RSS: whatever the PSS of a cheap sample, it is under the limit, and
    the RSS is no new high."""
    history = MemoryHistory(limit)
    for rss, share in steps:
        decision = pss_needed(rss, history)
        if not decision.needed:
            pss = int(rss * share)
            assert limit is None or pss < NEAR_LIMIT * limit <= limit
            assert rss <= history.rss_peak
        history.record(rss, decision.needed)
