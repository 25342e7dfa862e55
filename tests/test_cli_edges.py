"""Odd situations a user runs into: a deleted working directory, a read-only state dir, a
closed terminal (SIGHUP), log files with unusual names or sizes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import Daemon


def test_sighup_stops_the_daemon_cleanly_and_records_running_jobs(tmp_path):
    d = Daemon(tmp_path).start()
    wf = d.submit("name: w\njobs:\n  - name: a\n    command: sleep 30\n")
    d.wait_for(lambda: d.jobs(wf)["a"].status == "running", what="job running")
    d.proc.send_signal(signal.SIGHUP)
    assert d.proc.wait(30) == 0
    assert "torcd_stopped" in d.log.read_text()
    d.start()
    try:
        job = d.jobs(wf)["a"]
        assert job.status == "terminated" and d.attempts(job.id)[-1].return_code == 143
    finally:
        d.stop()


def test_read_only_state_dir_is_a_one_line_error(tmp_path):
    if os.getuid() == 0:  # root writes anywhere: make the state dir's parent a file instead
        (tmp_path / "ro").write_text("")
        state = tmp_path / "ro" / "state"
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        state = tmp_path / "ro" / "state"
    r = subprocess.run(
        [sys.executable, "-m", "torcd", "--socket", str(tmp_path / "run" / "s.sock"), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot use the state dir {state}" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torcctl",
            "--socket",
            str(tmp_path / "run" / "s.sock"),
            "--state-dir",
            str(state),
            "workflows",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(state) in r.stderr, r.stderr


def test_commands_from_a_deleted_directory_say_so(daemon, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (
        "import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
        "from torcctl.cli import main; sys.exit(main(sys.argv[2:]))"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: w\njobs:\n  - name: a\n    command: 'true'\n")
    for args in (["run", str(spec)], ["submit", str(spec)], ["validate", str(spec)]):
        r = subprocess.run(
            [sys.executable, "-c", script, str(gone), "--socket", daemon.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        assert "current directory no longer exists" in r.stderr
        gone.mkdir()


def test_logs_of_a_recovery_script_when_the_output_dir_name_contains_job_wf(daemon, tmp_path):
    wf = daemon.submit("""
name: r
output_dir: out/job_wf_results
failure_handlers:
  - name: h
    rules:
      - exit_codes: [10]
        recovery_script: echo recovering-$TORC_RETURN_CODE
        max_retries: 2
jobs:
  - name: a
    command: if [ "$TORC_ATTEMPT_ID" = 1 ]; then echo first; exit 10; fi; echo second
    failure_handler: h
""")
    daemon.wait(wf)
    job = daemon.jobs(wf)["a"].id
    code, out, err = daemon.ctl("logs", str(job), "--attempt", "1", "--recovery")
    assert code == 0, err
    assert out == "recovering-10\n"
    code, out, _ = daemon.ctl("logs", str(job), "--attempt", "1")
    assert out == "first\n"


@pytest.mark.parametrize("tail, expected", [(None, 200_000), (3, 3), (0, 0), (250_000, 200_000)])
def test_logs_streams_large_files_and_tails_lines(daemon, tmp_path, tail, expected):
    wf = daemon.submit("name: big\njobs:\n  - name: a\n    command: seq 1 200000\n")
    daemon.wait(wf)
    job = daemon.jobs(wf)["a"].id
    args = ["--socket", daemon.socket, "--no-autostart", "logs", str(job)] + (
        [] if tail is None else ["--tail", str(tail)]
    )
    r = subprocess.run([sys.executable, "-m", "torcctl", *args], capture_output=True, text=True, timeout=30)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == expected
    if expected:
        assert lines[-1] == "200000" and lines[0] == str(200_000 - expected + 1)


def test_logs_tail_must_be_a_whole_number(daemon):
    with pytest.raises(SystemExit) as e:
        daemon.ctl("logs", "1", "--tail", "-3")
    assert e.value.code == 2
