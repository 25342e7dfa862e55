"""Torc's `execution_config`: the signal and grace a job gets at its runtime limit, the exit codes
a job stopped for its time or memory is recorded with (so Torc's rules for 152 and 137 match),
memory limits left unenforced (`limit_resources: false`), Torc's stdio modes, and a clear refusal
of what torc-py does not run."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import REPO

from torcd.errors import SpecError
from torcd.services.job_logs import remove_logs
from torcd.spec.execution import Execution
from torcd.spec.parse import parse_spec

HEAD = "name: e\njobs:\n  - {name: a, command: 'true'}\nexecution_config:\n"


def execution(config: str, extra: str = "") -> Execution:
    return parse_spec(HEAD + config + extra, "wf.yaml").execution


def test_without_execution_config_a_stopped_job_keeps_its_own_exit_code():
    assert parse_spec(HEAD.removesuffix("execution_config:\n"), "wf.yaml").execution == Execution()


def test_torcs_checkpointing_config_reads_as_it_says():
    config = (
        "  mode: direct\n  limit_resources: true\n  termination_signal: SIGTERM\n  sigterm_lead_seconds: 45\n"
        "  oom_exit_code: 137\n  timeout_exit_code: 152\n  staggered_start: true\n"
        "  stdio: {mode: separate, delete_on_success: false}\n"
    )
    assert execution(config) == Execution(signal.SIGTERM, 45.0, 152, 137)
    assert execution("  limit_resources: false\n") == Execution(signal.SIGTERM, None, 152, 137, False)


def test_torcs_defaults_apply_once_an_execution_config_is_given():
    assert execution("  mode: auto\n") == Execution(signal.SIGTERM, None, 152, 137)
    assert execution("  termination_signal: USR1\n").term_signal == signal.SIGUSR1


@pytest.mark.parametrize(
    "config, extra, field, words",
    [
        ("  mode: slurm\n", "", "mode", "has no `slurm_schedulers`"),
        ("  sigkill_headroom_seconds: 60\n", "", "sigkill_headroom_seconds", "compute_node_expiration_buffer"),
        ("  enable_cpu_bind: true\n", "", "enable_cpu_bind", "srun option"),
        ("  srun_mpi: pmix\n", "", "srun_mpi", "srun --mpi="),
        ("  srun_termination_signal: TERM@90\n", "", "srun_termination_signal", "srun option"),
        ("  stdio: {mode: both}\n", "", "stdio.mode", "'both'; expected one of combined, no_stderr"),
        ("  stdio: {delete: true}\n", "", "stdio.delete", "unknown key"),
        ("  termination_signal: SIGKILL\n", "", "termination_signal", "not a signal a job can catch"),
        ("  termination_signal: NOPE\n", "", "termination_signal", "not a signal a job can catch"),
        ("  termination_signal: 'SIG TERM'\n", "", "termination_signal", "not a signal a job can catch"),
        ("  timeout_exit_code: 300\n", "", "timeout_exit_code", "<= 255"),
        ("  sigterm_lead_seconds: -1\n", "", "sigterm_lead_seconds", ">= 0"),
        ("  job_stdio_overrides: {}\n", "", "job_stdio_overrides", "unknown key"),
    ],
)
def test_what_torc_py_does_not_run_is_refused_with_its_field(config, extra, field, words):
    with pytest.raises(SpecError) as info:
        execution(config, extra)
    e = info.value
    assert e.file == "wf.yaml" and e.line == 5 and e.field == f"$.execution_config.{field}", e.message
    assert words in e.message


def test_torcs_checkpointing_example_validates_without_a_warning_about_152(tmp_path):
    spec = (REPO / "examples" / "execution_config.yaml").read_text()
    assert parse_spec(spec, "execution_config.yaml").execution.timeout_exit_code == 152


TRAPPED = """\
name: trapped
execution_config:
  termination_signal: SIGUSR1
  sigterm_lead_seconds: 1
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [152], max_retries: 2}
resource_requirements:
  - {name: short, runtime: PT1S}
jobs:
  - name: saves
    command: |
      trap 'echo saved at attempt $TORC_ATTEMPT_ID; exit 3' USR1
      if [ "$TORC_ATTEMPT_ID" = 1 ]; then sleep 30 & wait; fi
      echo resumed
    failure_handler: h
    resource_requirements: short
  - name: deaf
    command: "trap '' USR1; sleep 30"
    resource_requirements: short
"""


def test_the_signal_the_grace_and_torcs_timeout_code_through_a_real_daemon(daemon):
    wf = daemon.submit(TRAPPED)
    assert daemon.wait(wf, timeout=60).counts == {"completed": 1, "failed": 1}
    saves = daemon.attempts(daemon.jobs(wf)["saves"].id)
    assert [(a.return_code, a.cause) for a in saves] == [(152, "timeout"), (0, None)]  # the rule for 152 retried it
    assert open(saves[0].stdout_path).read() == "saved at attempt 1\n"  # it got USR1, not TERM
    (deaf,) = daemon.attempts(daemon.jobs(wf)["deaf"].id)
    assert (deaf.return_code, deaf.cause) == (152, "timeout")
    assert 1.5 < deaf.end_time - deaf.start_time < 10  # USR1 ignored: KILLed after the 1 s lead


def test_torcs_oom_exit_code_is_recorded_for_a_job_over_its_memory(daemon):
    hold = REPO / "examples" / "scripts" / "hold_memory.sh"
    wf = daemon.submit(
        f"""name: m
execution_config: {{oom_exit_code: 99}}
resource_requirements:
  - {{name: small, memory: 100m}}
jobs:
  - {{name: big, command: "bash {hold} 400 30", resource_requirements: small}}
"""
    )
    assert daemon.wait(wf, timeout=30).counts == {"failed": 1}
    (a,) = daemon.attempts(daemon.jobs(wf)["big"].id)
    assert (a.return_code, a.cause) == (99, "oom")


STDIO = """\
name: stdio
execution_config:
  stdio: {mode: combined, delete_on_success: true}
failure_handlers:
  - name: once
    rules:
      - {exit_codes: [3], max_retries: 2}
jobs:
  - {name: combined, command: "echo out; echo err >&2"}
  - name: flaky
    command: 'echo try $TORC_ATTEMPT_ID; echo oops >&2; [ "$TORC_ATTEMPT_ID" = 2 ] || exit 3'
    failure_handler: once
  - {name: separate, command: "echo out; echo err >&2", stdio: {mode: separate}}
  - {name: quiet, command: "echo out; echo err >&2", stdio: {mode: no_stdout}}
  - {name: loud, command: "echo out; echo err >&2", stdio: {mode: no_stderr}}
  - {name: silent, command: "echo out; echo err >&2", stdio: {mode: none}}
  - {name: fails, command: "echo out; echo err >&2; exit 1", stdio: {mode: none}}
"""


def test_torcs_stdio_modes_and_delete_on_success_through_a_real_daemon(daemon, tmp_path):
    wf = daemon.submit(STDIO, cwd=tmp_path)
    assert daemon.wait(wf, timeout=30).counts == {"completed": 6, "failed": 1}
    jobs = daemon.jobs(wf)
    stdio = tmp_path / "output" / "job_stdio"

    def logs(name: str) -> list[tuple[str, str]]:
        return [(a.stdout_path, a.stderr_path) for a in daemon.attempts(jobs[name].id)]

    # The workflow's mode: one .log for both streams, deleted once the job completes...
    ((out, err),) = logs("combined")
    assert out == err and out.endswith(".log") and not (stdio / out).exists()
    # ...and kept for the attempt that failed, not for the one that completed.
    (first, _), (second, _) = logs("flaky")
    assert open(first).read() == "try 1\noops\n" and not (stdio / second).exists()
    # A job's own stdio replaces the workflow's whole: delete_on_success is false again.
    ((out, err),) = logs("separate")
    assert (open(out).read(), open(err).read()) == ("out\n", "err\n")
    ((out, err),) = logs("quiet")
    assert out == "" and open(err).read() == "err\n"
    ((out, err),) = logs("loud")
    assert err == "" and open(out).read() == "out\n"
    assert logs("silent") == [("", "")] and logs("fails") == [("", "")]
    assert sorted(p.name for p in stdio.iterdir()) == sorted(
        os.path.basename(p) for p in (first, *logs("separate")[0], logs("quiet")[0][1], logs("loud")[0][0])
    )
    # What is not kept is said so, not read as a missing file.
    code, _, err = daemon.ctl("logs", str(jobs["quiet"].id))
    assert code != 0 and "stdout is not kept" in err and "Traceback" not in err


def test_limit_resources_false_samples_memory_but_kills_nothing(daemon):
    hold = REPO / "examples" / "scripts" / "hold_memory.sh"
    wf = daemon.submit(
        f"""name: m
execution_config: {{limit_resources: false}}
resource_monitor: {{enabled: true, sample_interval_seconds: 0.2}}
resource_requirements:
  - {{name: small, memory: 100m}}
jobs:
  - {{name: big, command: "bash {hold} 200 2", resource_requirements: small}}
"""
    )
    assert daemon.wait(wf, timeout=30).counts == {"completed": 1}
    (a,) = daemon.attempts(daemon.jobs(wf)["big"].id)
    assert a.return_code == 0 and a.peak_memory is not None and a.peak_memory > 150 * 2**20


def test_delete_on_success_leaves_what_is_not_the_users_own_file(tmp_path):
    logs = tmp_path / "job_stdio"
    logs.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (logs / "a.o").symlink_to(victim)  # planted where a log was
    (logs / "a.e").write_text("err")
    problems = remove_logs(str(logs / "a.o"), str(logs / "a.e"), str(logs / "gone.o"), "")
    assert victim.read_text() == "keep" and (logs / "a.o").is_symlink() and not (logs / "a.e").exists()
    assert problems == [f"{logs / 'a.o'}: not this user's regular file; left in place"]
