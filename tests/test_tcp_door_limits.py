"""The TCP door under a flood: another user's idle connections cannot lock the owner out."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

from conftest import Daemon

SPEC = "name: twenty\njobs:\n  - {name: 'j{i}', command: 'echo {i}', parameters: {i: '1:20'}}\n"


def _address(d: Daemon) -> tuple[str, int]:
    url = urlsplit(d.call("ping")["tcp_url"])
    return "127.0.0.1", url.port


def _hold_connections(user, address: tuple[str, int], count: int) -> int:
    """Fork a process that becomes `user`, opens `count` connections to `address` and holds them
    without sending anything; return its pid once they are open (or refused)."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (count + 64, count + 64))
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            held = []
            for _ in range(count):
                s = socket.socket()
                try:
                    s.connect(address)
                    held.append(s)
                except OSError:
                    s.close()
            os.write(ready_w, b"x")
            time.sleep(120)
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    return pid


def _descriptors(d: Daemon) -> int:
    return len(os.listdir(f"/proc/{d.proc.pid}/fd"))


def test_another_users_idle_connections_do_not_lock_the_owner_out(make_daemon, other_user):
    """Found in review: ~1,010 idle connections from another local user used every descriptor
    of a daemon with the common soft limit of 1,024: the owner's commands failed, 16 of 20 jobs
    failed 126 "Too many open files", and the log grew 2.4 MB/s."""
    d = make_daemon()
    d.start("--listen", "127.0.0.1:0", env={"TORCD_IDLE_TIMEOUT": "2"}, max_open_files=1024)
    holder = _hold_connections(other_user, _address(d), 1100)
    try:
        # The per-peer cap (64) closes the rest as they come.
        d.wait_for(lambda: _descriptors(d) < 200, timeout=10, what="connections over the cap to be closed")
        code, out, _ = d.ctl("workflows", "list")
        assert code == 0
        wf = d.submit(SPEC)
        assert d.wait(wf).counts == {"completed": 20}
        d.wait_for(lambda: _descriptors(d) < 64, timeout=20, what="idle connections to be closed")
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
    log = d.log.read_text()
    assert len(log) < 200_000 and "Too many open files" not in log
    assert 1 <= log.count("tcp_connections_refused") <= 3, log.count("tcp_connections_refused")


def test_a_request_whose_body_never_arrives_gets_408_and_one_whose_headers_never_end_is_closed(make_daemon):
    d = make_daemon()
    d.start("--listen", "127.0.0.1:0", env={"TORCD_IDLE_TIMEOUT": "1", "TORCD_BODY_TIMEOUT": "1"})
    address = _address(d)
    token = open(os.path.join(d.state_dir, "token")).read().strip()
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(
            f"POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n{{".encode()
        )
        assert s.recv(1024).startswith(b"HTTP/1.1 408")
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        began = time.monotonic()
        assert s.recv(1024) == b""  # closed by the daemon
        assert time.monotonic() - began < 8
    assert d.client.ping(2)


def test_a_tcp_port_already_in_use_is_a_one_line_error(make_daemon, tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "torcd",
                "--socket",
                str(tmp_path / "s" / "sock"),
                "--state-dir",
                str(tmp_path / "st"),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in r.stderr


def test_a_flood_of_one_warning_is_cut_to_a_burst_and_then_counted():
    from torcd.log_config import RateLimit

    now = [0.0]
    limit = RateLimit(burst=3, window=60, clock=lambda: now[0])
    assert [limit.admit("refused") for _ in range(5)] == [0, 0, 0, None, None]
    assert limit.admit("other") == 0  # each kind has its own budget
    now[0] = 61
    assert limit.admit("refused") == 2  # the first line of the next window says how many were left out
    assert limit.admit("refused") == 0


def test_the_guard_admits_under_both_caps_only():
    from torcd.api.door_limits import ConnectionGuard

    guard = ConnectionGuard(total=3, per_peer=2, clock=lambda: 0.0)
    assert [guard.enter("a"), guard.enter("a"), guard.enter("a"), guard.enter("b"), guard.enter("c")] == [
        True,
        True,
        False,
        True,
        False,
    ]
    guard.leave("a")
    assert guard.enter("c") and not guard.enter("c") and guard.by_peer == {"a": 1, "b": 1, "c": 1}
