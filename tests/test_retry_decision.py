"""The failure-handler decision, as a table of cases (and a property)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torcd.core.retry import Action, Rule, decide, select_rule, signal_return_code

R10 = Rule(exit_codes=[10], recovery_script="./fix.sh", max_retries=3)
R12 = Rule(exit_codes=[12], max_retries=3)
ANY = Rule(match_all_exit_codes=True, max_retries=2)


@pytest.mark.parametrize(
    "rules,code,expected",
    [
        ([R10, R12, ANY], 10, 0),
        ([R10, R12, ANY], 12, 1),
        ([R10, R12, ANY], 99, 2),
        ([ANY, R10, R12], 10, 1),  # a specific rule beats a catch-all placed first
        ([ANY, R10, R12], 12, 2),
        ([ANY, R10], 1, 0),
        ([R10, R12], 1, None),
        ([Rule(exit_codes=[1, 2]), Rule(exit_codes=[2, 3])], 2, 0),  # first specific match wins
        ([Rule(match_all_exit_codes=True), Rule(match_all_exit_codes=True, max_retries=9)], 5, 0),
        ([], 1, None),
    ],
)
def test_select_rule(rules, code, expected):
    assert select_rule(rules, code) == expected


@pytest.mark.parametrize(
    "rules,attempt,code,upf,action,rule",
    [
        ([R10, R12, ANY], 1, 10, None, Action.RECOVER, 0),
        ([R10, R12, ANY], 2, 10, None, Action.RECOVER, 0),
        ([R10, R12, ANY], 3, 10, None, Action.FAIL, 0),  # max_retries 3 allows attempts 1..3
        ([R10, R12, ANY], 1, 12, None, Action.RETRY, 1),
        ([R10, R12, ANY], 3, 12, None, Action.FAIL, 1),
        ([R10, R12, ANY], 1, 1, None, Action.RETRY, 2),
        ([R10, R12, ANY], 2, 1, None, Action.FAIL, 2),
        ([R10, R12], 1, 1, None, Action.PARK, None),  # a handler implies pending_failed
        ([R10, R12], 1, 1, False, Action.FAIL, None),  # unless the workflow turns it off
        ([R10, R12], 1, 1, True, Action.PARK, None),
        (None, 1, 1, None, Action.FAIL, None),  # no handler
        (None, 1, 1, True, Action.PARK, None),  # no handler but use_pending_failed
        (None, 1, 1, False, Action.FAIL, None),
        ([Rule(exit_codes=[5], max_retries=1)], 1, 5, None, Action.FAIL, 0),  # max_retries 1: no retry
        ([R10], 5, 10, True, Action.FAIL, 0),  # exhausted is failed even with use_pending_failed
    ],
)
def test_decide(rules, attempt, code, upf, action, rule):
    d = decide(rules, attempt=attempt, return_code=code, use_pending_failed=upf)
    assert (d.action, d.rule_index) == (action, rule)
    assert d.reason


@given(
    st.lists(
        st.one_of(
            st.builds(
                Rule,
                exit_codes=st.lists(st.integers(1, 255), min_size=1, max_size=4),
                max_retries=st.integers(1, 5),
                recovery_script=st.sampled_from([None, "./r.sh"]),
            ),
            st.builds(Rule, match_all_exit_codes=st.just(True), max_retries=st.integers(1, 5)),
        ),
        max_size=5,
    ),
    st.integers(1, 255),
    st.integers(1, 8),
    st.sampled_from([None, True, False]),
)
def test_decision_properties(rules, code, attempt, upf):
    d = decide(rules, attempt=attempt, return_code=code, use_pending_failed=upf)
    index = select_rule(rules, code)
    assert d.rule_index == index
    if index is not None:
        rule = rules[index]
        specific = [i for i, r in enumerate(rules) if r.exit_codes and code in r.exit_codes]
        assert index == (specific[0] if specific else next(i for i, r in enumerate(rules) if r.match_all_exit_codes))
        if attempt >= rule.max_retries:
            assert d.action is Action.FAIL
        else:
            assert d.action is (Action.RECOVER if rule.recovery_script else Action.RETRY)
    else:
        assert d.action in (Action.PARK, Action.FAIL)


def test_signal_return_codes():
    assert signal_return_code(-9) == 137
    assert signal_return_code(-15) == 143
    assert signal_return_code(3) == 3
