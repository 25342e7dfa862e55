"""When a job's memory sample needs its exact figure (PSS), and when the cheap one (RSS) will do.

Summing the resident set sizes (RSS) of a job's processes costs one read of /proc/PID/stat per
process; their proportional set sizes (PSS: a page shared by several processes counted once)
cost a walk of every mapping (smaps_rollup), ten times that. A tree's PSS is never above its
RSS, so while the RSS stays below both the job's memory limit and the highest RSS seen so far,
the job cannot be over its limit and its peak has not grown through new memory: the cheap
figure will do. The exact one is taken on the first sample, at a new RSS peak, near the limit,
and every `REFRESH_AFTER` samples (a forked child that writes to pages it shares with its
parent makes both sets grow in PSS without growing in RSS).
"""

from __future__ import annotations

import enum

import msgspec

NEAR_LIMIT = 0.8  # from this share of the limit on, every sample is exact: enforcement needs it
REFRESH_AFTER = 30  # cheap samples in a row before an exact one anyway


class Why(str, enum.Enum):
    FIRST = "first sample"
    NEW_PEAK = "new peak"
    NEAR_LIMIT = "near the limit"
    REFRESH = "refresh"
    CHEAP = "cheap"  # the exact figure is not needed


class PssDecision(msgspec.Struct, frozen=True):
    needed: bool
    why: Why


class MemoryHistory(msgspec.Struct):
    """What the sampler remembers of one job between its samples."""

    limit: int | None  # bytes
    rss_peak: int = 0  # the highest RSS sum seen
    exact_samples: int = 0
    since_exact: int = 0  # cheap samples since the last exact one

    def record(self, rss: int, exact: bool) -> None:
        self.rss_peak = max(self.rss_peak, rss)
        if exact:
            self.exact_samples += 1
            self.since_exact = 0
        else:
            self.since_exact += 1


def pss_needed(rss: int, history: MemoryHistory) -> PssDecision:
    """Whether this sample, whose processes' RSS sum to `rss` bytes, needs their PSS."""
    if history.exact_samples == 0:
        return PssDecision(True, Why.FIRST)
    if history.limit is not None and rss >= NEAR_LIMIT * history.limit:
        return PssDecision(True, Why.NEAR_LIMIT)
    if rss > history.rss_peak:
        return PssDecision(True, Why.NEW_PEAK)
    if history.since_exact >= REFRESH_AFTER:
        return PssDecision(True, Why.REFRESH)
    return PssDecision(False, Why.CHEAP)
