"""Another user on the same host: squatting the socket, planting the state dir, reading our files.

Each test makes a throwaway user (root and useradd, as in CI) and checks that what it plants is
refused with a one-line error naming the path and its owner, and that nothing was sent to it.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time

from conftest import Daemon

SPEC = "name: secret\njobs:\n  - name: a\n    command: echo TOPSECRET-7f3a\n"


def fake_daemon(user, sock_path: str, received: str) -> int:
    """Fork a process that becomes `user`, listens on `sock_path` and writes whatever a client
    sends it to `received`; return its pid (it answers like a daemon would)."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            s = socket.socket(socket.AF_UNIX)
            s.bind(sock_path)
            os.chmod(sock_path, 0o777)
            s.listen(8)
            os.write(ready_w, b"x")
            s.settimeout(20)
            while True:
                conn, _ = s.accept()
                conn.settimeout(2)
                data = b""
                try:
                    data = conn.recv(1 << 20)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 61\r\n\r\n"
                        b'{"jsonrpc":"2.0","id":1,"result":{"id":99,"name":"fake..."}}'
                    )
                except OSError:
                    pass
                with open(received, "ab") as f:
                    f.write(data)
                conn.close()
        except BaseException:
            pass
        finally:
            os._exit(0)
    os.close(ready_w)
    ready = os.read(ready_r, 1)
    os.close(ready_r)
    assert ready == b"x", f"the fake daemon could not listen on {sock_path}"
    return pid


def torcctl(*args: str, cwd: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torcctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_client_sends_nothing_to_a_socket_in_a_directory_another_user_made(other_user, shared_tmp, tmp_path):
    squat = os.path.join(shared_tmp, "torcd-squat")
    os.mkdir(squat, 0o755)
    os.chown(squat, other_user.pw_uid, other_user.pw_gid)
    received = os.path.join(shared_tmp, "received")
    open(received, "w").close()
    os.chmod(received, 0o666)
    pid = fake_daemon(other_user, os.path.join(squat, "torcd.sock"), received)
    try:
        (tmp_path / "spec.yaml").write_text(SPEC)
        for args in (["--no-autostart", "submit", "spec.yaml"], ["run", "spec.yaml"], ["workflows", "list"]):
            r = torcctl("--socket", os.path.join(squat, "torcd.sock"), *args, cwd=str(tmp_path))
            assert r.returncode == 2, r
            assert other_user.pw_name in r.stderr and "torcd-squat" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert open(received, "rb").read() == b""  # not even a connection carried data
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_client_refuses_a_listener_running_as_another_user_even_on_our_own_socket(other_user, shared_tmp):
    ours = os.path.join(shared_tmp, "run")
    os.mkdir(ours)
    os.chmod(ours, 0o777)  # opened up so that the other user can bind there
    received = os.path.join(shared_tmp, "received")
    open(received, "w").close()
    os.chmod(received, 0o666)
    path = os.path.join(ours, "torcd.sock")
    pid = fake_daemon(other_user, path, received)
    try:
        os.chown(path, os.getuid(), os.getgid())  # the socket file now looks like ours
        os.chmod(ours, 0o700)
        r = torcctl("--socket", path, "--no-autostart", "workflows", "list")
        assert r.returncode == 2 and f"runs as uid {other_user.pw_uid}, not as you" in r.stderr, r.stderr
        assert open(received, "rb").read() == b""
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_daemon_refuses_socket_and_state_dirs_another_user_made(other_user, shared_tmp):
    for what in ("socket", "state"):
        planted = os.path.join(shared_tmp, f"planted-{what}")
        os.mkdir(planted, 0o755)
        os.chown(planted, other_user.pw_uid, other_user.pw_gid)
        sock = os.path.join(planted, "torcd.sock") if what == "socket" else os.path.join(shared_tmp, "run", "s.sock")
        state = planted if what == "state" else os.path.join(shared_tmp, "state-ok")
        r = subprocess.run(
            [sys.executable, "-m", "torcd", "--socket", sock, "--state-dir", state],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 1, r
        assert other_user.pw_name in r.stderr and planted in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert os.listdir(planted) == []  # nothing created in it


def test_daemon_refuses_a_state_dir_others_can_write(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o777)
    r = subprocess.run(
        [sys.executable, "-m", "torcd", "--socket", str(tmp_path / "run" / "s.sock"), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "can be written by other users (mode 0777)" in r.stderr, r.stderr
    assert os.listdir(state) == []


def test_state_files_are_private_and_a_chosen_socket_directory_keeps_its_mode(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    os.chmod(project, 0o2775)  # a group's shared project directory, setgid
    d = Daemon(tmp_path)
    d.socket = str(project / "torcd.sock")
    d.client = type(d.client)(d.socket)
    d.start()
    try:
        wf = d.submit("name: w\njobs:\n  - name: a\n    command: 'true'\n")
        d.wait(wf)
    finally:
        d.stop()
    assert stat.S_IMODE(os.stat(project).st_mode) == 0o2775  # not chmod-ed to 0700
    state = d.state_dir
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    for name in ("torcd.store.db", "torcd.lock", "exits.log"):
        mode = stat.S_IMODE(os.stat(os.path.join(state, name)).st_mode)
        assert mode == 0o600, (name, oct(mode))


def test_a_daemon_started_by_the_client_logs_privately_and_a_socket_directory_it_made_is_0700(tmp_path):
    (tmp_path / "spec.yaml").write_text("name: w\njobs:\n  - name: a\n    command: 'true'\n")
    sock = tmp_path / "fresh" / "torcd.sock"
    r = torcctl("--socket", str(sock), "--state-dir", str(tmp_path / "st"), "run", "-q", "spec.yaml", cwd=str(tmp_path))
    assert r.returncode == 0, r
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "st" / "torcd.log").st_mode) == 0o600
    deadline = time.monotonic() + 20
    while sock.exists() and time.monotonic() < deadline:  # the run stopped the daemon it started
        time.sleep(0.05)
    assert not sock.exists()
