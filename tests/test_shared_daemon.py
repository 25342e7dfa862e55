"""`torcctl run` on a daemon it started: others may be using it by the time the run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torcctl.transport import Transport


def spec(name: str, seconds: float) -> str:
    return f"name: {name}\njobs:\n  - name: {name}\n    command: sleep {seconds}\n"


# Python raises a signal handler's KeyboardInterrupt between any two bytecodes, a finalizer's too,
# where it is printed and dropped. This runs torcctl with every SIGINT handler's exception dropped so.
DROPPED = """
import signal, sys
from torcctl.cli import main
install = signal.signal
def dropping(handler):
    def run(signum, frame):
        try:
            handler(signum, frame)
        except KeyboardInterrupt:
            print("Exception ignored in finalizer: KeyboardInterrupt", file=sys.stderr)
    return run
signal.signal = lambda sig, handler: install(sig, dropping(handler) if callable(handler) else handler)
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(main(sys.argv[1:]))
"""


def start_run(tmp: Path, name: str, *extra: str, dropped: bool = False) -> subprocess.Popen:
    env = {**os.environ, "TORCD_SOCKET": str(tmp / "run" / "torcd.sock"), "TORCD_STATE_DIR": str(tmp / "state")}
    for var in ("TORC_REQUIRE_SLURM", "TORC_REQUIRE_SYSTEMD", "TORC_REQUIRE_BROWSER"):
        env.pop(var, None)
    return subprocess.Popen(
        [sys.executable, *(["-c", DROPPED] if dropped else ["-m", "torcctl"]), "run", *extra, f"{name}.yaml"],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(autouse=True)
def no_daemon_left_behind(tmp_path):
    """Whatever a test asserts, the daemon a `torcctl run` started in it does not outlive it."""
    yield
    try:
        pid = int((tmp_path / "state" / "torcd.lock").read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            ours = str(tmp_path).encode() in f.read()  # not some other process that got the pid since
        if ours:
            os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_a_run_leaves_the_daemon_it_started_to_a_run_still_using_it(tmp_path):
    (tmp_path / "short.yaml").write_text(spec("short", 2))
    (tmp_path / "long.yaml").write_text(spec("long", 5))
    first = start_run(tmp_path, "short", "-q")
    client = Transport(str(tmp_path / "run" / "torcd.sock"))
    wait_for(lambda: client.ping(0.5))
    time.sleep(0.8)
    second = start_run(tmp_path, "long", "-q")
    out1, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert "leaving the torcd this command started running: workflow 2 is active" in err1
    out2, err2 = second.communicate(timeout=60)
    assert second.returncode == 0, (out2, err2)
    assert "lost the daemon" not in err2
    # The last run out stopped the daemon a client had started.
    wait_for(lambda: not (tmp_path / "run" / "torcd.sock").exists())


@pytest.mark.parametrize("dropped", [False, True], ids=["raised", "dropped-in-a-finalizer"])
def test_ctrl_c_on_a_run_that_started_the_daemon_says_the_jobs_stop_then_stops_them(tmp_path, dropped):
    (tmp_path / "long.yaml").write_text(spec("long", 30))
    run = start_run(tmp_path, "long", dropped=dropped)
    assert run.stdout.readline().startswith("workflow 1: long")  # the run is following its workflow
    client = Transport(str(tmp_path / "run" / "torcd.sock"))
    wait_for(lambda: client.call("jobs.list", {"workflow_id": 1})[0]["status"] == "running")
    client.close()
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=20)  # not the job's 30 s: the run does not follow on to its end
    assert run.returncode == 130
    assert "stopping the torcd this command started; the running jobs of workflow 1 are terminated" in err
    wait_for(lambda: not (tmp_path / "run" / "torcd.sock").exists())


def test_ctrl_c_leaves_the_workflow_running_in_a_daemon_someone_else_started(daemon, tmp_path):
    (tmp_path / "long.yaml").write_text(spec("long", 30))
    run = subprocess.Popen(
        [sys.executable, "-m", "torcctl", "--socket", daemon.socket, "run", "long.yaml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert run.stdout.readline().startswith("workflow 1: long")  # the run is following its workflow
    wait_for(lambda: daemon.jobs(1)["long"].status == "running")
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130
    assert "workflow 1 keeps running in torcd" in err and "torcctl watch 1" in err
    assert daemon.jobs(1)["long"].status == "running"
    daemon.call("workflows.cancel", {"workflow_id": 1})
