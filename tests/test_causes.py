"""Failure handlers that match what went wrong (`causes`) and grow the next attempt's runtime."""

from __future__ import annotations

import pytest

from torcd.core.retry import Action, Rule, decide, select_rule, simulate
from torcd.errors import SpecError
from torcd.spec.parse import parse_spec

CAUSE = Rule(causes=["timeout"], runtime_multiplier=1.5, max_retries=3)
CODE = Rule(exit_codes=[143], max_retries=3)
ALL = Rule(match_all_exit_codes=True, max_retries=2)


@pytest.mark.parametrize(
    "rules, rc, cause, expected",
    [
        ([CODE, CAUSE, ALL], 143, "timeout", 1),  # a cause beats an exit code, wherever it stands
        ([CAUSE, CODE, ALL], 143, "timeout", 0),
        ([ALL, CODE, CAUSE], 143, "timeout", 2),  # ... and a catch-all
        ([CODE, CAUSE, ALL], 143, None, 0),  # no cause: exit codes as before
        ([CAUSE, ALL], 143, None, 1),
        ([CODE, CAUSE, ALL], 137, "oom", 2),  # a cause no rule names: exit codes, then the catch-all
        ([CAUSE], 1, "oom", None),
    ],
)
def test_the_rule_for_an_exit(rules, rc, cause, expected):
    assert select_rule(rules, rc, cause) == expected


def test_a_multiplier_travels_with_a_retry_decision():
    d = decide([CAUSE], attempt=1, return_code=143, use_pending_failed=None, cause="timeout")
    assert (d.action, d.runtime_multiplier) == (Action.RETRY, 1.5)
    assert "timeout (exit code 143) matched rule 0" in d.reason and "runtime x1.5" in d.reason
    assert decide([CAUSE], attempt=3, return_code=143, use_pending_failed=None, cause="timeout").action == Action.FAIL


def test_explain_walks_causes():
    steps = simulate([CODE, CAUSE], None, [(143, "timeout"), (143, None), (0, None)])
    assert [(s.rule_index, s.action, s.cause) for s in steps] == [
        (1, "retry", "timeout"),
        (0, "retry", None),
        (None, "complete", None),
    ]


SPEC = """
name: grow
failure_handlers:
  - name: slow
    rules:
      - {causes: [timeout], runtime_multiplier: 4, max_retries: 2}
resource_requirements:
  - {name: quick, runtime: PT1S}
jobs:
  - {name: takes_2s, command: sleep 2, resource_requirements: quick, failure_handler: slow}
"""


def test_a_timeout_rule_grows_the_next_attempts_runtime_and_a_reset_restores_it(daemon):
    wf = daemon.submit(SPEC)
    assert daemon.wait(wf, timeout=60).counts == {"completed": 1}
    job = daemon.jobs(wf)["takes_2s"]
    atts = daemon.attempts(job.id)
    assert [(a.cause, a.runtime_limit, a.rule_index) for a in atts] == [("timeout", 1.0, 0), (None, 4.0, None)]
    assert atts[1].return_code == 0
    daemon.call("workflows.reset_status", {"workflow_id": wf})
    daemon.wait(wf, timeout=60)
    run2 = [a for a in daemon.attempts(job.id) if a.run_id == 2]
    assert [a.runtime_limit for a in run2] == [1.0, 4.0]  # the new run starts from the spec's runtime


def test_explain_and_validate_speak_of_causes(daemon, tmp_path):
    (tmp_path / "grow.yaml").write_text(SPEC)
    code, out, err = daemon.ctl("explain", "grow.yaml", "--job", "takes_2s", "--exit-codes", "timeout,0")
    assert code == 0, err
    assert "attempt 1: timeout (exit 143) -> retry as attempt 2 [rule 0: causes ['timeout']" in out
    code, _, err = daemon.ctl("explain", "grow.yaml", "--job", "takes_2s", "--exit-codes", "timeout,sometimes")
    assert code == 2 and "'sometimes' is neither" in err
    (tmp_path / "nolimit.yaml").write_text(
        SPEC.replace(", resource_requirements: quick", "").replace(
            "runtime_multiplier: 4", "runtime_multiplier: 4, memory_multiplier: 2"
        )
    )
    code, out, _ = daemon.ctl("validate", "nolimit.yaml")
    assert code == 0
    assert "runtime_multiplier has no limit to multiply" in out and "memory_multiplier has no limit to multiply" in out


@pytest.mark.parametrize(
    "rule, message",
    [
        ("{causes: [hunger]}", "Expected `str` matching"),
        ("{causes: []}", "length >= 1"),
        ("{causes: [timeout], runtime_multiplier: 0}", "> 0"),
        ("{max_retries: 2}", "a rule needs `causes`, `exit_codes`"),
    ],
)
def test_bad_cause_rules(rule, message):
    spec = f"name: b\nfailure_handlers:\n  - name: h\n    rules:\n      - {rule}\njobs:\n  - {{name: a, command: x}}\n"
    with pytest.raises(SpecError) as e:
        parse_spec(spec, "b.yaml")
    assert message in e.value.message or (message == "Expected `str` matching" and "hunger" in e.value.message)
