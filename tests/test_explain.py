"""`torcctl validate` warnings and `torcctl explain`, checked against what the daemon really does."""

from __future__ import annotations

import json
import textwrap

from torcctl import cli

LINT = """\
name: lint
failure_handlers:
  - name: h
    rules:
      - exit_codes: [10, 11]
        max_retries: 1
      - exit_codes: [10]
      - exit_codes: [11, 12]
        recovery_script: ./missing.sh --fix
      - exit_codes: [14]
        recovery_script: ./not_executable.sh
      - match_all_exit_codes: true
      - exit_codes: [13]
  - name: unused
    rules:
      - exit_codes: [1]
        recovery_script: nosuchcommand_xyz arg
  - name: fine
    rules:
      - exit_codes: [1]
        recovery_script: echo fixing; ./fix.sh
jobs:
  - {name: a, command: "true", failure_handler: h}
  - {name: b, command: "true", failure_handler: fine}
"""


def run_ctl(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_warns_about_rules_scripts_and_handlers(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(LINT)
    (tmp_path / "not_executable.sh").write_text("true\n")
    code, out, err = run_ctl(capsys, "validate", "spec.yaml")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "spec.yaml:6: warning: max_retries: 1 allows only the first attempt: no retry (max_retries counts "
        "attempts) (at $.failure_handlers[0].rules[0].max_retries)",
        "spec.yaml:7: warning: rule 1 can never match: earlier rules cover all its exit codes [10] "
        "(at $.failure_handlers[0].rules[1])",
        "spec.yaml:8: warning: exit codes [11] of rule 2 are matched by an earlier rule first "
        "(at $.failure_handlers[0].rules[2])",
        f"spec.yaml:9: warning: recovery script './missing.sh' does not exist (relative to {tmp_path}) "
        "(at $.failure_handlers[0].rules[2].recovery_script)",
        "spec.yaml:11: warning: recovery script './not_executable.sh' is not executable "
        "(chmod +x ./not_executable.sh) (at $.failure_handlers[0].rules[3].recovery_script)",
        "spec.yaml:14: warning: failure handler 'unused' is used by no job (at $.failure_handlers[1].name)",
        "spec.yaml:17: warning: recovery script command 'nosuchcommand_xyz' is not on PATH nor a shell builtin "
        "(at $.failure_handlers[1].rules[0].recovery_script)",
        "spec.yaml: ok (2 jobs, 3 failure handlers, 7 warnings)",
    ]
    assert run_ctl(capsys, "validate", "--strict", "spec.yaml")[0] == 1
    code, out, _ = run_ctl(capsys, "--json", "validate", "spec.yaml")
    assert len(json.loads(out)["warnings"]) == 7


CATCH_ALL_FIRST = """\
name: order
failure_handlers:
  - name: h
    rules:
      - match_all_exit_codes: true
        max_retries: 2
      - exit_codes: [13]
        max_retries: 4
      - match_all_exit_codes: true
jobs:
  - {name: j, command: "exit 13", failure_handler: h}
"""


def test_specific_rule_after_a_catch_all_is_not_reported_because_it_wins(tmp_path, capsys, monkeypatch):
    """The linter follows select_rule: a specific rule beats a catch-all wherever it stands;
    only a second catch-all can never match."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(CATCH_ALL_FIRST)
    code, out, err = run_ctl(capsys, "validate", "--strict", "spec.yaml")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "spec.yaml:9: warning: rule 2 can never match: rule 0 before it already matches every code no specific "
        "rule lists (at $.failure_handlers[0].rules[2])",
        "spec.yaml: ok (1 jobs, 1 failure handlers, 1 warnings)",
    ]
    (tmp_path / "spec.yaml").write_text(CATCH_ALL_FIRST.replace("      - match_all_exit_codes: true\njobs", "jobs"))
    code, out, err = run_ctl(capsys, "validate", "--strict", "spec.yaml")
    assert (code, err) == (0, ""), out
    code, out, _ = run_ctl(capsys, "--json", "explain", "spec.yaml", "--job", "j", "--exit-codes", "13,1")
    assert [s["rule_index"] for s in json.loads(out)["steps"]] == [1, 0]  # 13: the specific rule; 1: the catch-all


def test_validate_of_the_examples_finds_nothing(capsys, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    for spec in sorted((REPO / "examples").glob("*.yaml")):
        code, out, err = run_ctl(capsys, "validate", "--strict", str(spec.relative_to(REPO)))
        assert (code, err) == (0, ""), out
        assert out.endswith(", 0 warnings)\n")


def test_validate_errors_name_the_line_and_change_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: x\njobs:\n  - {name: a, command: echo, failure_handler: nope}\n")
    code, out, err = run_ctl(capsys, "validate", "bad.yaml")
    assert code == 2 and out == ""
    assert err.startswith("torcctl: error: bad.yaml:3:") and "nope" in err


SPEC = """\
name: explained
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], recovery_script: "true", max_retries: 4}
      - {exit_codes: [12], max_retries: 4}
jobs:
  - name: j
    command: codes=(CODES); exit ${codes[$TORC_ATTEMPT_ID-1]}
    failure_handler: h
"""


def test_explain_predicts_what_the_daemon_does(daemon, capsys):
    for codes, final in (([10, 12, 0], "completed"), ([12, 10, 1], "pending_failed"), ([10, 12, 10, 12], "failed")):
        path = daemon.tmp / f"explain{len(codes)}{final}.yaml"
        path.write_text(SPEC.replace("CODES", " ".join(map(str, codes))))
        code, out, err = run_ctl(
            capsys, "--json", "explain", str(path), "--job", "j", "--exit-codes", ",".join(map(str, codes))
        )
        assert (code, err) == (0, "")
        predicted = json.loads(out)
        assert predicted["final_status"] == final
        wf = daemon.submit(path.read_text(), name=path.name)
        daemon.wait(wf)
        job = daemon.jobs(wf)["j"]
        attempts = daemon.attempts(job.id)
        assert job.status == final
        actions = {"recover": "recover", "retry": "retry", "fail": "fail", "pending_failed": "pending_failed"}
        assert [(a.attempt_id, a.return_code, a.action) for a in attempts] == [
            (s["attempt"], s["return_code"], actions.get(s["action"])) for s in predicted["steps"]
        ]


def test_explain_text(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC.replace("CODES", "0"))
    code, out, _ = run_ctl(capsys, "explain", "spec.yaml", "--job", "j", "--exit-codes", "10,12,1")
    assert code == 0
    assert out == textwrap.dedent("""\
        job j: failure handler 'h'; use_pending_failed: unset (unmatched codes park the job)
        attempt 1: exit 10 -> run recovery script `true` (TORC_RETURN_CODE=10); if it succeeds, retry as attempt 2, else the job fails [rule 0: exit_codes [10], max_retries 4]
        attempt 2: exit 12 -> retry as attempt 3 [rule 1: exit_codes [12], max_retries 4]
        attempt 3: exit 1 -> pending_failed: waits for `torcctl jobs retry|fail` or an agent
          because: exit code 1 matched no rule; awaiting classification
        final status: pending_failed
        """)  # noqa: E501 the expected line is as long as the one printed
    code, out, _ = run_ctl(capsys, "explain", "spec.yaml", "--job", "j", "--exit-codes", "12")
    assert out.splitlines()[-2:] == [
        "attempt 2 would run next (give more exit codes to follow it)",
        "final status: ready",
    ]


NEITHER = (
    "--exit-codes takes exit codes 0-255 and causes (timeout, oom, missing_output), comma-separated; '{}' is neither"
)


def test_explain_refuses_bad_arguments(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC.replace("CODES", "0"))
    for args, message in (
        (["--job", "nope", "--exit-codes", "1"], "no job 'nope' in spec.yaml; jobs: j"),
        (["--job", "j", "--exit-codes", "1,x"], NEITHER.format("x")),
        (["--job", "j", "--exit-codes", "256"], NEITHER.format("256")),
        (["--job", "j", "--exit-codes", ","], "--exit-codes needs at least one exit code or cause"),
    ):
        code, out, err = run_ctl(capsys, "explain", "spec.yaml", *args)
        assert (code, out) == (2, "")
        assert err == f"torcctl: error: {message}\n"


def test_a_rule_for_torcs_timeout_code_is_told_about_the_timeout_cause(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = "name: t\nfailure_handlers:\n  - name: h\n    rules:\n      - {exit_codes: [152], max_retries: 3}\n"
    (tmp_path / "spec.yaml").write_text(spec + "jobs:\n  - {name: j, command: 'true', failure_handler: h}\n")
    code, out, _ = run_ctl(capsys, "validate", "spec.yaml")
    assert code == 0 and "spec.yaml:5: warning: 152 is Torc's (and Slurm's) exit code of a timed-out job" in out
    assert "add `causes: [timeout]` to this rule for those, or give the workflow an `execution_config`" in out
    (tmp_path / "spec.yaml").write_text(
        spec.replace("max_retries: 3}", "max_retries: 3, causes: [timeout]}")
        + "jobs:\n  - {name: j, command: 'true', failure_handler: h}\n"
    )
    code, out, _ = run_ctl(capsys, "validate", "spec.yaml")
    assert code == 0 and "0 warnings" in out
