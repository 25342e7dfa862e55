"""systemd: Type=notify messages on a fake NOTIFY_SOCKET, socket activation with a passed fd,
and the unit files checked by systemd-analyze.

The last two need systemd's tools: mandatory where TORC_REQUIRE_SYSTEMD=1 (CI installs them);
elsewhere skipped, with the reason, only when this machine has none.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO, Daemon

_missing = [t for t in ("systemd-socket-activate", "systemd-analyze") if not shutil.which(t)]
if _missing and os.environ.get("TORC_REQUIRE_SYSTEMD") == "1":
    raise RuntimeError(f"TORC_REQUIRE_SYSTEMD=1 but {', '.join(_missing)} not found")
needs_systemd = pytest.mark.skipif(bool(_missing), reason=f"no {', '.join(_missing)} on this machine")


def _messages(sock: socket.socket, until: str, timeout: float = 20) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got += sock.recv(4096).decode().split("\n")
        except TimeoutError:
            break
        if until in got:
            return got
    raise AssertionError(f"no {until} within {timeout}s; got {got}")


def test_notify_ready_watchdog_and_stopping(tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    d = Daemon(tmp_path).start(
        wait=False, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "100000"}
    )
    try:
        first = _messages(notify, "READY=1")
        assert d.client.ping(1.0)  # READY=1 means the socket answers
        assert f"MAINPID={d.proc.pid}" in first
        assert _messages(notify, "WATCHDOG=1", timeout=2)  # every 50 ms while the loop turns
        assert _messages(notify, "WATCHDOG=1", timeout=2)
        wf = d.submit("name: w\njobs:\n  - {name: j, command: env > job_env.txt}\n")
        d.wait(wf)
        job_env = (tmp_path / "job_env.txt").read_text()
        assert "NOTIFY_SOCKET" not in job_env and "WATCHDOG_USEC" not in job_env
        d.proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in _messages(notify, "STOPPING=1")
        assert d.proc.wait(30) == 0
    finally:
        d.stop()
        notify.close()


@needs_systemd
def test_socket_activation_serves_on_the_passed_socket_and_leaves_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    path = run / "torcd.sock"
    activator = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(path),
            sys.executable,
            "-m",
            "torcd",
            "--state-dir",
            str(tmp_path / "state"),
            "--max-parallel-jobs",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "torcd.log", "wb"),
    )
    d = Daemon(tmp_path)
    d.socket = str(path)
    d.client = type(d.client)(str(path), timeout=30)
    try:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        inode = path.stat().st_ino
        info = d.call("ping")  # the first connection starts torcd, which answers on the passed socket
        assert info["socket"] == str(path) and info["pid"] == activator.pid  # exec'd in place
        wf = d.submit("name: w\njobs:\n  - {name: j, command: echo $TORC_API_URL > url.txt}\n")
        assert d.wait(wf).counts == {"completed": 1}
        assert (tmp_path / "url.txt").read_text().strip() == f"unix://{path}"
        assert path.stat().st_ino == inode  # served as passed, never re-bound
        os.kill(activator.pid, signal.SIGTERM)
        assert activator.wait(30) == 0
        assert path.exists()  # the socket belongs to systemd: torcd leaves it in place
    finally:
        if activator.poll() is None:
            activator.kill()
        d.client.close()


@needs_systemd
def test_unit_files_pass_systemd_analyze_verify(tmp_path):
    torcd = shutil.which("torcd")
    assert torcd, "torcd must be installed (pip install .)"
    # As a user installs them: ExecStart pointing at where pip put torcd.
    service = (REPO / "systemd" / "torcd.service").read_text().replace("%h/.local/bin/torcd", torcd)
    (tmp_path / "torcd.service").write_text(service)
    shutil.copy(REPO / "systemd" / "torcd.socket", tmp_path / "torcd.socket")
    r = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "torcd.socket"), str(tmp_path / "torcd.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert "Type=notify" in service and "WatchdogSec=" in service
