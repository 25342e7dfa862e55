"""The failure-handler decision: which rule matches an exit, and what happens next.

This is the one place the retry policy lives. The retry engine, the recovery
runner and `torcctl explain` all call these functions.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import msgspec


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exit_codes: list[int] | None = None
    match_all_exit_codes: bool = False
    recovery_script: str | None = None
    max_retries: int = 3
    recovery_timeout: float = 3600.0


class Action(str, enum.Enum):
    RETRY = "retry"  # straight back to ready with attempt N+1
    RECOVER = "recover"  # run the recovery script; ready on success, failed otherwise
    FAIL = "fail"
    PARK = "pending_failed"  # wait for a person or an agent to classify


class RetryDecision(msgspec.Struct, frozen=True):
    action: Action
    rule_index: int | None
    reason: str


def select_rule(rules: Sequence[Rule], return_code: int) -> int | None:
    """Index of the rule for this code: first specific match, else first catch-all."""
    for i, rule in enumerate(rules):
        if rule.exit_codes and return_code in rule.exit_codes:
            return i
    for i, rule in enumerate(rules):
        if rule.match_all_exit_codes:
            return i
    return None


def decide(rules: Sequence[Rule] | None, *, attempt: int, return_code: int,
           use_pending_failed: bool | None) -> RetryDecision:
    """What to do after attempt `attempt` exited with a non-zero `return_code`.

    `rules` is None when the job has no failure handler. `use_pending_failed`
    is the workflow's setting: None when unset, so a handler implies parking.
    """
    index = select_rule(rules, return_code) if rules else None
    if index is None:
        park = use_pending_failed if use_pending_failed is not None else rules is not None
        if park:
            return RetryDecision(Action.PARK, None,
                                 f"exit code {return_code} matched no rule; awaiting classification")
        return RetryDecision(Action.FAIL, None, f"exit code {return_code} matched no rule")
    rule = rules[index]
    if attempt >= rule.max_retries:
        return RetryDecision(Action.FAIL, index,
                             f"rule {index} allows {rule.max_retries} attempts; attempt {attempt} was the last")
    if rule.recovery_script:
        return RetryDecision(Action.RECOVER, index,
                             f"exit code {return_code} matched rule {index}; running recovery script")
    return RetryDecision(Action.RETRY, index,
                         f"exit code {return_code} matched rule {index}; retrying as attempt {attempt + 1}")


def signal_return_code(returncode: int) -> int:
    """Map a subprocess returncode to a shell-style code (killed by S -> 128+S)."""
    return 128 - returncode if returncode < 0 else returncode
