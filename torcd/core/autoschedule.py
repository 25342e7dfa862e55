"""When to ask Slurm for more allocations, and how many, as pure functions of counts and a clock."""

from __future__ import annotations

import msgspec


class AutoSchedulePolicy(msgspec.Struct, frozen=True):
    enabled: bool = False
    threshold: int = 5  # ready retry jobs that justify more compute while allocations run
    cooldown: float = 1800.0  # seconds between submissions under rule 2
    stranded_timeout: float = 7200.0  # a retry waiting this long gets compute whatever the threshold; 0: never


class ScheduleInputs(msgspec.Struct, frozen=True):
    ready_jobs: int
    ready_retry_jobs: int  # ready with attempt_id > 1
    oldest_retry_ready_since: float | None
    running_allocations: int
    pending_allocations: int
    last_submit: float | None


class ScheduleDecision(msgspec.Struct, frozen=True):
    submit: bool
    rule: int | None
    reason: str
    why: str = ""  # a stable word for the reason, to tell a new situation from a repeated one


def _no(why: str, reason: str) -> ScheduleDecision:
    return ScheduleDecision(False, None, reason, why)


def decide_auto_schedule(policy: AutoSchedulePolicy, s: ScheduleInputs, now: float) -> ScheduleDecision:
    """Rule 1: ready jobs and no allocations at all. Rule 2: allocations running and at least
    `threshold` ready retries, at most once per cooldown. Rule 3: rule 2 does not submit (too few
    retries, or its cooldown is on) but the oldest retry has waited longer than the stranded timeout
    since it became ready and since the last submission (0 turns rule 3 off, as in Torc). Nothing is
    submitted while an allocation is still queued."""
    if not policy.enabled:
        return _no("off", "auto-schedule is off")
    if s.ready_jobs == 0:
        return _no("idle", "no ready jobs")
    if s.running_allocations == 0 and s.pending_allocations == 0:
        return ScheduleDecision(True, 1, f"{s.ready_jobs} ready jobs and no allocation pending or running", "rule1")
    if s.pending_allocations:
        return _no("queued", f"{s.pending_allocations} allocations already queued")
    cooling = s.last_submit is not None and now - s.last_submit < policy.cooldown
    if s.ready_retry_jobs >= policy.threshold and not cooling:
        return ScheduleDecision(
            True,
            2,
            f"{s.ready_retry_jobs} ready retries >= threshold {policy.threshold} "
            f"with {s.running_allocations} allocations running",
            "rule2",
        )
    if policy.stranded_timeout > 0 and s.ready_retry_jobs and s.oldest_retry_ready_since is not None:
        # Waiting counts from the last time compute was asked for: an allocation just submitted
        # (or just started, its worker not yet polling) is on its way to the retry.
        waited = now - max(s.oldest_retry_ready_since, s.last_submit or s.oldest_retry_ready_since)
        if waited > policy.stranded_timeout:
            return ScheduleDecision(
                True,
                3,
                f"{s.ready_retry_jobs} ready retries, waiting {waited:.0f}s "
                f"since compute was last asked for > stranded timeout "
                f"{policy.stranded_timeout:g}s",
                "rule3",
            )
    if s.ready_retry_jobs >= policy.threshold:
        left = policy.cooldown - (now - (s.last_submit or now))
        return _no("cooldown", f"{s.ready_retry_jobs} ready retries, but the cooldown has {left:.0f}s left")
    return _no("below_threshold", f"{s.ready_retry_jobs} ready retries below threshold {policy.threshold}")
