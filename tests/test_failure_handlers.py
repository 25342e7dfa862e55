"""Failure handlers against a real daemon: rules, recovery scripts, retries, pending_failed."""

from __future__ import annotations

import os

from conftest import REPO

from torcd.protocol import JobInfo

FAIL_UNTIL = f"bash {REPO}/examples/scripts/fail_until.sh"
ENV_DUMP = "env | grep ^TORC_ | sort"


def handler(*rules: str, name: str = "h") -> str:
    return f"failure_handlers:\n  - name: {name}\n    rules:\n" + "".join(
        "      - " + r.strip().replace("\n", "\n        ") + "\n" for r in rules
    )


def statuses(daemon, wf) -> dict[str, str]:
    return {n: j.status for n, j in daemon.jobs(wf).items()}


def decisions(daemon, wf, job: str) -> list[tuple]:
    return [
        (e.attempt_id, e.return_code, e.rule_index, e.action)
        for e in daemon.events(wf)
        if e.kind == "retry_decided" and e.job_name == job
    ]


def test_plain_retry_until_success_with_attempt_numbers(daemon):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [12]\nmax_retries: 3")
        + f"""
jobs:
  - {{name: j, command: "{FAIL_UNTIL} 12 3", failure_handler: h}}
"""
    )
    daemon.wait(wf)
    job = daemon.jobs(wf)["j"]
    assert job.status == "completed" and job.attempt_id == 3
    atts = daemon.attempts(job.id)
    assert [(a.attempt_id, a.return_code, a.action) for a in atts] == [(1, 12, "retry"), (2, 12, "retry"), (3, 0, None)]
    for a in atts:  # every attempt keeps its own log files with its own output
        assert open(a.stdout_path).read().startswith(f"attempt {a.attempt_id} of j")
        assert a.stdout_path.endswith(f"_r1_a{a.attempt_id}.o") and os.path.exists(a.stderr_path)
    assert decisions(daemon, wf, "j") == [(1, 12, 0, "retry"), (2, 12, 0, "retry")]


def test_max_retries_three_allows_exactly_three_attempts_then_fails(daemon):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [12]\nmax_retries: 3")
        + f"""
jobs:
  - {{name: j, command: "{FAIL_UNTIL} 12 99", failure_handler: h}}
  - {{name: down, command: "true", depends_on: [j]}}
"""
    )
    daemon.wait(wf)
    assert statuses(daemon, wf) == {"j": "failed", "down": "canceled"}
    assert [a.attempt_id for a in daemon.attempts(daemon.jobs(wf)["j"].id)] == [1, 2, 3]
    assert decisions(daemon, wf, "j")[-1] == (3, 12, 0, "fail")


def test_specific_rule_beats_catch_all_whatever_the_order(daemon):
    wf = daemon.submit(
        "name: r\n"
        + handler("match_all_exit_codes: true\nmax_retries: 1", "exit_codes: [10]\nmax_retries: 2")
        + f"""
jobs:
  - {{name: ten, command: "{FAIL_UNTIL} 10 2", failure_handler: h}}
  - {{name: other, command: "{FAIL_UNTIL} 5 2", failure_handler: h}}
"""
    )
    daemon.wait(wf)
    assert statuses(daemon, wf) == {"ten": "completed", "other": "failed"}
    assert decisions(daemon, wf, "ten") == [(1, 10, 1, "retry")]
    assert decisions(daemon, wf, "other") == [(1, 5, 0, "fail")]  # catch-all with max_retries 1


def test_no_rule_parks_a_job_with_a_handler_and_blocks_downstream(daemon):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [10]")
        + f"""
jobs:
  - {{name: j, command: "{FAIL_UNTIL} 1 2 'segfault-ish'", failure_handler: h}}
  - {{name: down, command: "true", depends_on: [j]}}
  - {{name: other, command: "true"}}
"""
    )
    info = daemon.wait(wf)
    assert info.state == "awaiting_classification"  # not finished while a job is pending_failed
    assert statuses(daemon, wf) == {"j": "pending_failed", "down": "blocked", "other": "completed"}
    listed = daemon.call("jobs.list", {"workflow_id": wf, "status": "pending_failed"}, list[JobInfo])
    assert [(j.name, j.return_code) for j in listed] == [("j", 1)]
    assert "segfault-ish (attempt 1, exit 1)" in listed[0].stderr_tail
    code, out, _ = daemon.ctl("jobs", "list", str(wf), "--status", "pending_failed")
    assert code == 0 and "segfault-ish" in out and " 1 " in out

    code, out, _ = daemon.ctl("jobs", "retry", str(listed[0].id), "--reason", "node was flaky")
    assert code == 0
    info = daemon.wait(wf, state="done")
    assert statuses(daemon, wf) == {"j": "completed", "down": "completed", "other": "completed"}
    job = daemon.jobs(wf)["j"]
    assert job.attempt_id == 2 and job.reason == "node was flaky"
    classified = [e for e in daemon.events(wf) if e.kind == "job_classified"]
    assert [(e.action, e.message, e.source) for e in classified] == [("retry", "node was flaky", "cli")]


def test_classifying_fail_cascades_and_wrong_status_is_refused(daemon):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [10]")
        + """
jobs:
  - {name: j, command: "exit 1", failure_handler: h}
  - {name: down, command: "true", depends_on: [j]}
  - {name: ok, command: "true"}
"""
    )
    daemon.wait(wf)
    jobs = daemon.jobs(wf)
    code, _, err = daemon.ctl("jobs", "fail", str(jobs["ok"].id), str(jobs["j"].id))
    assert code == 2 and "completed, not pending_failed" in err
    assert statuses(daemon, wf)["j"] == "pending_failed"  # nothing changed
    code, _, _ = daemon.ctl("jobs", "fail", str(jobs["j"].id), "--reason", "bad input data")
    assert code == 0
    assert daemon.wait(wf, state="done").state == "done"
    assert statuses(daemon, wf) == {"j": "failed", "down": "canceled", "ok": "completed"}
    assert daemon.jobs(wf)["j"].reason == "bad input data"


def test_use_pending_failed_false_fails_even_with_a_handler(daemon):
    wf = daemon.submit(
        "name: r\nuse_pending_failed: false\n"
        + handler("exit_codes: [10]")
        + """
jobs:
  - {name: j, command: "exit 1", failure_handler: h}
"""
    )
    daemon.wait(wf)
    assert statuses(daemon, wf) == {"j": "failed"}


def test_use_pending_failed_true_parks_jobs_without_a_handler(daemon):
    wf = daemon.submit('name: r\nuse_pending_failed: true\njobs:\n  - {name: j, command: "exit 3"}\n')
    daemon.wait(wf)
    assert statuses(daemon, wf) == {"j": "pending_failed"}


def test_shared_handler_across_jobs(daemon):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [12]\nmax_retries: 2")
        + f"""
jobs:
  - name: s{{i}}
    command: {FAIL_UNTIL} 12 {{i}}
    failure_handler: h
    parameters: {{i: "1:3"}}
"""
    )
    daemon.wait(wf)
    jobs = daemon.jobs(wf)
    assert {n: (j.status, j.attempt_id) for n, j in jobs.items()} == {
        "s1": ("completed", 1),
        "s2": ("completed", 2),
        "s3": ("failed", 2),
    }


def test_recovery_script_sees_the_job_env_plus_return_code(daemon, tmp_path):
    (tmp_path / "recover.sh").write_text(
        f"#!/bin/bash\n{ENV_DUMP} > recovery_env_$TORC_ATTEMPT_ID.txt\npwd > recovery_cwd.txt\n"
    )
    os.chmod(tmp_path / "recover.sh", 0o755)
    wf = daemon.submit(
        "name: r\noutput_dir: out\n"
        + handler("exit_codes: [10]\nrecovery_script: ./recover.sh")
        + f"""
jobs:
  - name: j
    command: {ENV_DUMP} > job_env_$TORC_ATTEMPT_ID.txt; {FAIL_UNTIL} 10 2
    failure_handler: h
    env: {{EXTRA_VAR: hello}}
"""
    )
    daemon.wait(wf)
    job = daemon.jobs(wf)["j"]
    assert job.status == "completed" and job.attempt_id == 2

    def read(name):
        return dict(line.split("=", 1) for line in (tmp_path / name).read_text().splitlines())

    common = {
        "TORC_WORKFLOW_ID": str(wf),
        "TORC_JOB_ID": str(job.id),
        "TORC_JOB_NAME": "j",
        "TORC_API_URL": f"unix://{daemon.socket}",
        "TORC_OUTPUT_DIR": str(tmp_path / "out"),
        "TORC_RUN_ID": "1",
    }
    assert read("job_env_1.txt") == {**common, "TORC_ATTEMPT_ID": "1"}
    assert read("job_env_2.txt") == {**common, "TORC_ATTEMPT_ID": "2"}
    assert read("recovery_env_1.txt") == {**common, "TORC_ATTEMPT_ID": "1", "TORC_RETURN_CODE": "10"}
    assert (tmp_path / "recovery_cwd.txt").read_text().strip() == str(tmp_path)
    rec_out = tmp_path / "out" / "job_stdio" / f"recovery_wf{wf}_j{job.id}_r1_a1.o"
    assert rec_out.exists() and rec_out.with_suffix(".e").exists()
    a1 = daemon.attempts(job.id)[0]
    assert (a1.action, a1.recovery_outcome) == ("recover", "succeeded")
    kinds = [e.kind for e in daemon.events(wf) if e.job_name == "j"]
    assert kinds == ["job_started", "job_exited", "retry_decided", "recovery_finished", "job_started", "job_completed"]


def test_failing_recovery_script_fails_the_job_and_cascades(daemon, tmp_path):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [10]\nrecovery_script: echo cannot fix >&2; exit 4")
        + """
jobs:
  - {name: j, command: "exit 10", failure_handler: h}
  - {name: down, command: "true", depends_on: [j]}
"""
    )
    daemon.wait(wf)
    assert statuses(daemon, wf) == {"j": "failed", "down": "canceled"}
    fin = [e for e in daemon.events(wf) if e.kind == "recovery_finished"]
    assert [(e.return_code, e.action, e.message) for e in fin] == [(4, "fail", "recovery script exited 4")]
    assert daemon.attempts(daemon.jobs(wf)["j"].id)[0].recovery_outcome == "failed"


def test_missing_or_unexecutable_recovery_script_is_reported(daemon, tmp_path):
    (tmp_path / "noexec.sh").write_text("#!/bin/bash\nexit 0\n")
    os.chmod(tmp_path / "noexec.sh", 0o644)
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [10]\nrecovery_script: ./missing.sh", name="h1").replace(
            "failure_handlers:\n", "failure_handlers:\n"
        )
        + handler("exit_codes: [10]\nrecovery_script: ./noexec.sh", name="h2").replace("failure_handlers:\n", "")
        + """
jobs:
  - {name: a, command: "exit 10", failure_handler: h1}
  - {name: b, command: "exit 10", failure_handler: h2}
"""
    )
    daemon.wait(wf)
    assert statuses(daemon, wf) == {"a": "failed", "b": "failed"}
    msgs = {e.job_name: e.message for e in daemon.events(wf) if e.kind == "recovery_finished"}
    assert msgs == {
        "a": "recovery script not found: './missing.sh' (exit 127)",
        "b": "recovery script not executable: './noexec.sh' (exit 126)",
    }


def test_recovery_timeout_counts_as_failure(daemon):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [10]\nrecovery_script: sleep 60\nrecovery_timeout: 0.5")
        + """
jobs:
  - {name: j, command: "exit 10", failure_handler: h}
"""
    )
    daemon.wait(wf, timeout=30)
    assert statuses(daemon, wf) == {"j": "failed"}
    fin = [e for e in daemon.events(wf) if e.kind == "recovery_finished"]
    assert fin[0].message == "recovery script timed out after 0.5s"


def test_job_shows_recovering_while_its_script_runs(daemon, tmp_path):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [10]\nrecovery_script: touch started; sleep 1")
        + """
jobs:
  - {name: j, command: "[ $TORC_ATTEMPT_ID -ge 2 ] || exit 10", failure_handler: h}
"""
    )
    daemon.wait_for(lambda: (tmp_path / "started").exists(), what="recovery script to start")
    assert statuses(daemon, wf) == {"j": "recovering"}
    daemon.wait(wf)
    assert statuses(daemon, wf) == {"j": "completed"}


def test_signal_killed_job_matches_exit_code_137(daemon):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [137]\nmax_retries: 2")
        + """
jobs:
  - {name: j, command: "[ $TORC_ATTEMPT_ID -ge 2 ] || kill -9 $$", failure_handler: h}
"""
    )
    daemon.wait(wf)
    assert decisions(daemon, wf, "j") == [(1, 137, 0, "retry")]
    assert statuses(daemon, wf) == {"j": "completed"}


def test_reset_failed_only_reruns_failed_jobs_and_what_they_block_in_a_new_run(daemon, tmp_path):
    wf = daemon.submit("""
name: r
jobs:
  - {name: ok, command: "echo ok"}
  - {name: bad, command: "[ -e fixed ] || exit 3"}
  - {name: down, command: "true", depends_on: [bad, ok]}
""")
    daemon.wait(wf)
    assert statuses(daemon, wf) == {"ok": "completed", "bad": "failed", "down": "canceled"}
    (tmp_path / "fixed").touch()
    code, out, _ = daemon.ctl("workflows", "reset-status", str(wf), "--failed-only")
    assert code == 0 and "2 jobs reset" in out
    daemon.wait(wf, state="done")
    jobs = daemon.jobs(wf)
    assert {n: (j.status, j.run_id, j.attempt_id) for n, j in jobs.items()} == {
        "ok": ("completed", 1, 1),
        "bad": ("completed", 2, 1),
        "down": ("completed", 2, 1),
    }
    atts = daemon.attempts(jobs["bad"].id)
    assert [(a.run_id, a.attempt_id, a.return_code) for a in atts] == [(1, 1, 3), (2, 1, 0)]
    assert atts[0].stdout_path.endswith("_r1_a1.o") and atts[1].stdout_path.endswith("_r2_a1.o")
    assert os.path.exists(atts[0].stdout_path)  # old runs' logs are kept
    # Without --failed-only every job runs again.
    code, out, _ = daemon.ctl("workflows", "reset-status", str(wf))
    assert code == 0 and "3 jobs reset" in out
    daemon.wait(wf, state="done")
    assert {j.run_id for j in daemon.jobs(wf).values()} == {3}


def test_attempts_command_lists_rule_action_and_logs(daemon):
    wf = daemon.submit(
        "name: r\n"
        + handler("exit_codes: [12]")
        + f"""
jobs:
  - {{name: j, command: "{FAIL_UNTIL} 12 2", failure_handler: h}}
"""
    )
    daemon.wait(wf)
    code, out, _ = daemon.ctl("jobs", "attempts", str(daemon.jobs(wf)["j"].id))
    assert code == 0
    lines = out.splitlines()
    assert "retry" in lines[1] and "12" in lines[1] and "_a1.o" in lines[1] and "_a2.o" in lines[2]
    code, out, _ = daemon.ctl("logs", str(daemon.jobs(wf)["j"].id), "--attempt", "1", "--stderr")
    assert code == 0 and "exit 12" in out
