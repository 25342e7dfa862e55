"""Recovery by resources: `torcctl recover` and `watch --recover` give jobs that ran out of
memory or time more, and run them again; the diagnosis is a pure table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from torcd.core.limits import Adjustment, FailedAttempt, diagnose, plan
from torcd.events import JobResourcesChanged

MiB = 1 << 20


def failed(rc=1, cause=None, wall=10.0, peak=None, memory=None, runtime=None) -> FailedAttempt:
    return FailedAttempt(1, "j", rc, cause, wall, peak, memory, runtime)


@pytest.mark.parametrize(
    "attempt, diagnosis",
    [
        (failed(137, "oom"), "oom"),  # recorded causes are trusted
        (failed(143, "timeout"), "timeout"),
        (failed(152), "timeout"),  # Slurm's time limit
        (failed(1, wall=95, runtime=100), "timeout"),  # ran over 90 % of its runtime
        (failed(137, wall=95, runtime=100), "timeout"),
        (failed(137, wall=50, runtime=100), "oom"),  # SIGKILL before 80 % of it
        (failed(137, wall=85, runtime=100), "unknown"),  # between the two: no guess
        (failed(137), "oom"),  # no runtime to compare with
        (failed(1), "unknown"),
        (failed(139, wall=10, runtime=100), "unknown"),
        (failed(1, "missing_output"), "unknown"),
        (failed(137, "missing_output", wall=95, runtime=100), "unknown"),  # a recorded cause is not second-guessed
    ],
)
def test_diagnosis(attempt, diagnosis):
    assert diagnose(attempt)[0] == diagnosis


def test_the_plan_grows_what_failed_the_job_and_only_that():
    attempts = [
        FailedAttempt(1, "oom_peak", 137, "oom", 3, 130 * MiB, 100 * MiB, 60),
        FailedAttempt(2, "oom_limit", 137, None, 3, None, 100 * MiB, None),
        FailedAttempt(3, "oom_nothing", 137, None, 3, None, None, None),
        FailedAttempt(4, "slow", 143, "timeout", 60, 10 * MiB, 100 * MiB, 60),
        FailedAttempt(5, "slurm_slow", 152, None, 60, None, None, None),
        FailedAttempt(6, "bug", 2, None, 1, None, None, None),
    ]
    got = {a.name: a for a in plan(attempts, 2.0, 1.5, retry_unknown=False)}
    assert got["oom_peak"].memory == (100 * MiB, 260 * MiB)  # from what it used, more than it had
    assert got["oom_peak"].runtime is None
    assert got["oom_limit"].memory == (100 * MiB, 200 * MiB)
    assert got["oom_nothing"] == Adjustment(3, "oom_nothing", "oom", "killed by SIGKILL (137)", True)
    assert (got["slow"].runtime, got["slow"].memory) == ((60, 90.0), None)
    assert (got["slurm_slow"].diagnosis, got["slurm_slow"].runtime, got["slurm_slow"].retry) == ("timeout", None, True)
    assert (got["bug"].diagnosis, got["bug"].retry) == ("unknown", False)
    assert plan(attempts[5:], 2.0, 1.5, retry_unknown=True)[0].retry


def test_grown_limits_stay_within_what_a_spec_may_ask():
    from torcd.core.resources import MAX_MEMORY, MAX_RUNTIME

    huge = [
        FailedAttempt(1, "m", 137, "oom", 1, 1 << 59, 1 << 59, None),
        FailedAttempt(2, "t", 143, "timeout", 1, None, None, MAX_RUNTIME),
    ]
    m, t = plan(huge, 1000, 1000, retry_unknown=False)
    assert m.memory == (1 << 59, MAX_MEMORY) and t.runtime == (MAX_RUNTIME, MAX_RUNTIME)


SPEC = """name: rec
resource_requirements:
  - {name: small, memory: 100m}
  - {name: quick, runtime: PT2S}
jobs:
  - {name: big, command: "(head -c 250m /dev/zero; sleep 1) | tail >/dev/null", resource_requirements: small}
  - {name: after_big, command: "true", depends_on: [big]}
  - {name: sibling, command: "true", resource_requirements: small}
  - {name: slow, command: "sleep 3", resource_requirements: quick}
  - {name: bug, command: "[ -e fixed ] || exit 3"}
"""


def test_recover_gives_oom_and_timeout_jobs_more_and_runs_them_again(daemon, tmp_path):
    wf = daemon.submit(SPEC)
    assert daemon.wait(wf, timeout=60).counts == {"completed": 1, "failed": 3, "canceled": 1}
    jobs = daemon.jobs(wf)

    code, out, _ = daemon.ctl("recover", str(wf), "--dry-run", "--memory-multiplier", "4", "--runtime-multiplier", "2")
    assert code == 1  # `bug` would be left failed
    assert "dry run, nothing changed: big (job" in out
    assert "oom, recorded as oom; retry with memory 100.0 MiB -> " in out
    assert "slow" in out and "runtime 2s -> 4s" in out and "bug" in out and "leave failed" in out
    assert daemon.jobs(wf) == jobs  # a dry run changes nothing
    assert not [e for e in daemon.events(wf) if isinstance(e, JobResourcesChanged)]

    code, out, _ = daemon.ctl("recover", str(wf), "--memory-multiplier", "4", "--runtime-multiplier", "2")
    assert code == 1 and "3 jobs reset to run again" in out  # big, after_big, slow; bug stays
    assert daemon.wait(wf, timeout=60).counts == {"completed": 4, "failed": 1}
    after = daemon.jobs(wf)
    assert after["big"].memory_bytes >= 400 * MiB and after["slow"].runtime_seconds == 4
    assert after["sibling"].memory_bytes == 100 * MiB  # shares big's requirement: keeps its own
    assert after["bug"].status == "failed" and after["after_big"].status == "completed"
    last = daemon.attempts(after["big"].id)[-1]
    assert (last.run_id, last.return_code, last.memory_limit) == (2, 0, after["big"].memory_bytes)
    changes = [
        (e.job_name, e.resource, e.old_value, e.new_value)
        for e in daemon.events(wf)
        if isinstance(e, JobResourcesChanged)
    ]
    assert changes == [("big", "memory", 100 * MiB, after["big"].memory_bytes), ("slow", "runtime", 2, 4)]


def test_a_recovery_hook_runs_for_unknown_failures_then_they_are_retried(daemon, tmp_path):
    wf = daemon.submit("name: hook\njobs:\n  - {name: bug, command: '[ -e fixed ] || exit 3'}\n")
    daemon.wait(wf)
    bug = daemon.jobs(wf)["bug"].id
    code, out, err = daemon.ctl("recover", str(wf), "--recovery-hook", "exit 4")
    assert code == 1 and "recovery hook exited 4" in err and daemon.jobs(wf)["bug"].status == "failed"
    code, out, err = daemon.ctl("recover", str(wf), "--recovery-hook", f'[ "$TORC_JOB_IDS" = {bug} ] && touch fixed')
    assert code == 0, err
    assert "1 jobs reset" in out
    assert daemon.wait(wf).counts == {"completed": 1}


def test_recover_refuses_a_workflow_with_jobs_still_running_and_changes_nothing(daemon):
    wf = daemon.submit("name: busy\njobs:\n  - {name: a, command: 'exit 137'}\n  - {name: b, command: 'sleep 30'}\n")
    daemon.wait_for(lambda: daemon.jobs(wf)["a"].status == "failed", what="a to fail")
    code, _, err = daemon.ctl("recover", str(wf))
    assert code != 0 and f"workflow {wf} still has 1 unfinished jobs" in err and "Traceback" not in err
    assert daemon.jobs(wf)["a"].status == "failed"
    daemon.ctl("workflows", "cancel", str(wf))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--memory-multiplier", "0.5"], "out of range"),
        (["--runtime-multiplier", "x"], "is not a number"),
        (["--memory-multiplier", "nan"], "out of range"),
        (["--max-retries", "-1"], "not a whole number"),
    ],
)
def test_bad_recover_arguments_are_refused(daemon, args, message):
    command = "watch" if args[0] == "--max-retries" else "recover"
    ran = subprocess.run(
        [sys.executable, "-m", "torcctl", "--socket", daemon.socket, command, "1", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ran.returncode == 2 and message in ran.stderr and "Traceback" not in ran.stderr


def test_watch_recover_grows_memory_until_the_job_fits(daemon):
    wf = daemon.submit(
        "name: grow\nresource_requirements:\n  - {name: small, memory: 100m}\njobs:\n"
        "  - {name: big, command: '(head -c 250m /dev/zero; sleep 1) | tail >/dev/null', "
        "resource_requirements: small}\n"
    )
    code, out, err = daemon.ctl("watch", str(wf), "--recover", "--memory-multiplier", "2", "--max-retries", "3")
    assert code == 0, out + err
    limits = [a.memory_limit for a in daemon.attempts(daemon.jobs(wf)["big"].id)]
    assert limits[0] == 100 * MiB and limits == sorted(limits) and len(limits) in (2, 3)
    assert out.count("jobs reset to run again") == len(limits) - 1


def test_watch_recover_stops_after_max_retries(daemon):
    wf = daemon.submit("name: hopeless\njobs:\n  - {name: killed, command: 'kill -9 $$'}\n")
    code, out, _ = daemon.ctl("watch", str(wf), "--recover", "--max-retries", "2")
    assert code == 1 and out.count("killed (job 1): oom") == 2  # 137, no limit: taken for memory, retried as it was
    assert out.count("workflow_created") == 1  # each event printed once
    assert [a.run_id for a in daemon.attempts(daemon.jobs(wf)["killed"].id)] == [1, 2, 3]
