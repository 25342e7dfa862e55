"""The failure-handler decision: which rule matches an exit, and what happens next.

This is the one place the retry policy lives. The retry engine, the recovery
runner and `torcctl explain` all call these functions.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Annotated

import msgspec
from msgspec import Meta

from torcd.core.exits import SIGKILL_EXIT, SIGTERM_EXIT, Cause
from torcd.core.exits import signal_return_code as signal_return_code  # for callers
from torcd.core.status import JobStatus as S

ExitCode = Annotated[int, Meta(ge=1, le=255)]


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One rule of a failure handler, as the spec gives it (its bounds are checked when a spec,
    or the store's copy, is decoded) and as `decide` reads it."""

    exit_codes: list[ExitCode] | None = None
    match_all_exit_codes: bool = False
    recovery_script: Annotated[str, Meta(min_length=1)] | None = None
    max_retries: Annotated[int, Meta(ge=1, le=1000)] = 3
    recovery_timeout: Annotated[float, Meta(gt=0)] = 3600.0
    causes: Annotated[list[Cause], Meta(min_length=1)] | None = None  # matched before any exit code
    runtime_multiplier: Annotated[float, Meta(gt=0, le=1000)] | None = (
        None  # the next attempt's runtime limit, times this
    )
    memory_multiplier: Annotated[float, Meta(gt=0, le=1000)] | None = None


class Action(str, enum.Enum):
    RETRY = "retry"  # straight back to ready with attempt N+1
    RECOVER = "recover"  # run the recovery script; ready on success, failed otherwise
    FAIL = "fail"
    PARK = "pending_failed"  # wait for a person or an agent to classify


# The job's status once an action is taken: the failure handler's, a classification's ("retry",
# "fail") and a recovery script's (retry when it succeeded, fail when not).
AFTER_ACTION = {
    Action.RETRY: S.READY,
    Action.RECOVER: S.RECOVERING,
    Action.FAIL: S.FAILED,
    Action.PARK: S.PENDING_FAILED,
}


class RetryDecision(msgspec.Struct, frozen=True):
    action: Action
    rule_index: int | None
    reason: str
    runtime_multiplier: float | None = None  # for the next attempt, when it is a retry
    memory_multiplier: float | None = None


def select_rule(rules: Sequence[Rule], return_code: int, cause: str | None = None) -> int | None:
    """Index of the rule for this exit: the first naming its cause, else the first naming its
    code, else the first catch-all."""
    if cause is not None:
        for i, rule in enumerate(rules):
            if rule.causes and cause in rule.causes:
                return i
    for i, rule in enumerate(rules):
        if rule.exit_codes and return_code in rule.exit_codes:
            return i
    for i, rule in enumerate(rules):
        if rule.match_all_exit_codes:
            return i
    return None


def decide(
    rules: Sequence[Rule] | None,
    *,
    attempt: int,
    return_code: int,
    use_pending_failed: bool | None,
    cause: str | None = None,
) -> RetryDecision:
    """What to do after attempt `attempt` exited with a non-zero `return_code`.

    `rules` is None when the job has no failure handler. `use_pending_failed`
    is the workflow's setting: None when unset, so a handler implies parking.
    """
    index = select_rule(rules, return_code, cause) if rules else None
    if index is None:
        park = use_pending_failed if use_pending_failed is not None else rules is not None
        if park:
            return RetryDecision(Action.PARK, None, f"exit code {return_code} matched no rule; awaiting classification")
        return RetryDecision(Action.FAIL, None, f"exit code {return_code} matched no rule")
    assert rules is not None  # a rule matched
    rule = rules[index]
    if attempt >= rule.max_retries:
        return RetryDecision(
            Action.FAIL, index, f"rule {index} allows {rule.max_retries} attempts; attempt {attempt} was the last"
        )
    what = (
        f"{cause} (exit code {return_code})"
        if cause and rule.causes and cause in rule.causes
        else f"exit code {return_code}"
    )
    grow = dict(runtime_multiplier=rule.runtime_multiplier, memory_multiplier=rule.memory_multiplier)
    more = "".join(
        f"; {k} x{v:g}" for k, v in (("runtime", rule.runtime_multiplier), ("memory", rule.memory_multiplier)) if v
    )
    if rule.recovery_script:
        return RetryDecision(
            Action.RECOVER, index, f"{what} matched rule {index}; running recovery script{more}", **grow
        )
    return RetryDecision(
        Action.RETRY, index, f"{what} matched rule {index}; retrying as attempt {attempt + 1}{more}", **grow
    )


class Step(msgspec.Struct, frozen=True):
    """One attempt of a simulated job: its exit code and what the daemon would do next."""

    attempt: int
    return_code: int
    action: str  # complete, retry, recover, fail, park
    rule_index: int | None
    reason: str
    status: str  # the job's status once the daemon has acted
    cause: str | None = None


# The exit code a cause usually comes with, for `explain --exit-codes timeout,oom,0`.
CAUSE_CODES = {"timeout": SIGTERM_EXIT, "oom": SIGKILL_EXIT, "missing_output": 1}


def simulate(
    rules: Sequence[Rule] | None, use_pending_failed: bool | None, return_codes: Sequence[int | tuple[int, str | None]]
) -> list[Step]:
    """Attempt by attempt, what the daemon decides for a job exiting with these codes in turn.

    Stops at the first attempt that ends the job (success, failure, or parked). A recovery
    script is taken to succeed; if it fails, the job fails at that attempt.
    """
    steps = []
    for attempt, item in enumerate(return_codes, 1):
        rc, cause = item if isinstance(item, tuple) else (item, None)
        if rc == 0 and cause is None:
            steps.append(Step(attempt, 0, "complete", None, "exit code 0", "completed"))
            break
        d = decide(rules, attempt=attempt, return_code=rc, use_pending_failed=use_pending_failed, cause=cause)
        # A recovery script is taken to succeed: a retry.
        status = AFTER_ACTION[Action.RETRY if d.action == Action.RECOVER else d.action].label
        steps.append(Step(attempt, rc, d.action.value, d.rule_index, d.reason, status, cause))
        if status != "ready":
            break
    return steps
