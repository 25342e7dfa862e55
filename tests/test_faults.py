"""Disk and database faults: a job that cannot write its logs fails with a reason; the daemon goes on."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def _torcd(tmp_path: Path, state: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torcd", "--socket", str(tmp_path / "s" / "sock"), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_locked_database_at_start_gives_a_clear_error(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    holder = sqlite3.connect(state / "torcd.store.db", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = _torcd(tmp_path, state)
    finally:
        holder.close()
    assert r.returncode == 1
    assert "is locked by another process" in r.stderr and "Traceback" not in r.stderr


def _spec(output_dir: str) -> str:
    return f"""\
name: w
output_dir: {output_dir}
jobs:
  - {{name: j, command: echo hi}}
"""


def _check_failed_with(daemon, wf: int, reason: str) -> None:
    daemon.wait(wf)
    job = daemon.jobs(wf)["j"]
    att = daemon.attempts(job.id)[0]
    assert (job.status, att.return_code) == ("failed", 126)
    assert reason in att.message
    # ... and the daemon carries on with other work.
    ok = daemon.submit(_spec("fine"), name="ok.yaml")
    assert daemon.wait(ok).counts == {"completed": 1}


def test_an_unwritable_log_path_fails_the_job_with_the_reason(daemon, tmp_path):
    (tmp_path / "blocker").write_text("a file where the output directory should be")
    wf = daemon.submit(_spec("blocker/out"))
    _check_failed_with(daemon, wf, "Not a directory")


@pytest.fixture(params=["no log dir yet", "log dir made, no room for files"])
def full_dir(request, tmp_path):
    """A tiny tmpfs with no inodes left: creating anything in it fails with ENOSPC. Either the
    daemon cannot make the log directory, or the job's shell cannot create its log files."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=4", "tmpfs", str(mnt)], check=True)
    try:
        if request.param != "no log dir yet":
            (mnt / "job_stdio").mkdir()
        for i in range(10):
            try:
                (mnt / f"filler{i}").touch()
            except OSError:
                break
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_full_output_directory_fails_the_job_with_the_reason(daemon, full_dir):
    wf = daemon.submit(_spec(str(full_dir)))
    _check_failed_with(daemon, wf, "No space left on device")


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_logs_and_output_dirs_are_never_world_writable_but_jobs_keep_the_users_umask(make_daemon, tmp_path):
    old = os.umask(0)  # the most permissive user: torcd still tightens what it creates itself
    try:
        d = make_daemon().start()
    finally:
        os.umask(old)
    wf = d.submit("""\
name: w
jobs:
  - {name: j, command: touch own_file}
""")
    d.wait(wf)
    att = d.attempts(d.jobs(wf)["j"].id)[0]
    for path in (att.stdout_path, att.stderr_path):
        assert _mode(path) == 0o664
    assert _mode(os.path.dirname(att.stdout_path)) == 0o755  # logs are opened there by name: ours alone
    assert _mode(tmp_path / "output") == 0o775
    assert _mode(tmp_path / "own_file") == 0o666  # the job's own files: the user's umask, untouched


def test_logs_follow_a_restrictive_umask(make_daemon, tmp_path):
    old = os.umask(0o077)
    try:
        d = make_daemon().start()
    finally:
        os.umask(old)
    wf = d.submit("name: w\njobs:\n  - {name: j, command: 'true'}\n")
    d.wait(wf)
    att = d.attempts(d.jobs(wf)["j"].id)[0]
    assert _mode(att.stdout_path) == 0o600
    assert _mode(os.path.dirname(att.stdout_path)) == 0o700


WAITING = """\
name: w
jobs:
  - {name: a, command: "until [ -e go ]; do sleep 0.02; done; echo a"}
  - {name: b, command: "echo b", depends_on: [a]}
"""
BIG = "name: big\njobs:\n  - {name: 'j{i}', command: 'echo {i}', parameters: {i: '1:5000'}}\n"


def test_a_database_locked_by_another_process_fails_requests_and_stops_nothing(daemon, tmp_path):
    """An operator's `sqlite3` holding a write transaction for 6 s stopped the daemon (the
    Dispatcher died on "database is locked"). Now requests fail with one clear line, the
    daemon's own writes wait for the lock, and nothing is lost."""
    wf = daemon.submit(WAITING)
    daemon.wait_for(lambda: daemon.jobs(wf)["a"].status == "running", what="a to run")
    holder = sqlite3.connect(os.path.join(daemon.state_dir, "torcd.store.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        (tmp_path / "go").touch()  # a's exit must wait for the lock
        code, out, err = daemon.ctl("submit", str(tmp_path / "spec.yaml"))
        assert code == 2 and "is locked by another process" in err and "Traceback" not in err, (code, err)
        assert len(err.strip().splitlines()) == 1, err
        assert daemon.client.ping(2)
        daemon.wait_for(lambda: "state_write_failed" in daemon.log.read_text(), what="the dispatcher to wait")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    info = daemon.wait(wf, state="done")
    assert info.counts == {"completed": 2}
    log = daemon.log.read_text()
    assert log.count("state_write_failed") == 1 and "state_write_recovered" in log, log
    again = WAITING.replace("name: w", "name: w2").replace("until [ -e go ]; do sleep 0.02; done; ", "")
    assert daemon.wait(daemon.submit(again)).counts == {"completed": 2}


def test_a_full_state_disk_fails_requests_clearly_and_stops_nothing(make_daemon, tmp_path):
    """With the state disk full, ROLLBACK after the failed COMMIT hid "database or disk is full"
    and the daemon stopped. Now the request fails saying so, running jobs keep running, and
    once there is room again everything waiting is recorded."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "statefs"
    mnt.mkdir()
    # Room for the 5,000 jobs after the filler goes (their store and its 4 MiB WAL: 8.2 MiB).
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    try:
        d = make_daemon()
        d.state_dir = str(mnt / "state")
        d.start()
        wf = d.submit(WAITING)
        d.wait_for(lambda: d.jobs(wf)["a"].status == "running", what="a to run")
        # Unbuffered: a buffered file keeps the tail of the write that hit the limit and
        # raises "no space" again when it is closed.
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while f.write(b"\0" * (1 << 16)):
                    pass
            except OSError:
                pass
        (tmp_path / "go").touch()
        (tmp_path / "big.yaml").write_text(BIG)
        code, out, err = d.ctl("submit", str(tmp_path / "big.yaml"))
        assert code == 2 and "is full" in err and "Traceback" not in err, (code, err)
        assert len(err.strip().splitlines()) == 1, err
        assert d.client.ping(2) and d.proc.poll() is None
        os.unlink(mnt / "filler")
        assert d.wait(wf, state="done").counts == {"completed": 2}
        assert d.wait(d.submit(BIG, name="big.yaml")).counts == {"completed": 5000}
        d.stop()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
