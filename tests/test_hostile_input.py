"""Hostile input and faults: fuzzed RPC bodies, odd commands, other users, broken databases."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torcctl.transport import _UnixConnection


def post(daemon, body: bytes) -> tuple[int, object]:
    c = _UnixConnection(daemon.socket, 30)
    try:
        c.request("POST", "/rpc", body)
        r = c.getresponse()
        data = r.read()
    finally:
        c.close()
    return r.status, (msgspec.json.decode(data) if data and r.status == 200 else data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
methods = st.sampled_from(
    [
        "ping",
        "workflows.show",
        "workflows.create",
        "jobs.list",
        "jobs.retry",
        "jobs.fail",
        "workflows.reset_status",
        "events.list",
        "workers.poll",
        "nope",
        "",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, params=json_values, id_=st.one_of(st.integers(), st.text(max_size=5), st.none()))
def test_fuzzed_requests_get_json_rpc_errors_and_the_daemon_keeps_serving(daemon, method, params, id_):
    body = msgspec.json.encode({"jsonrpc": "2.0", "id": id_, "method": method, "params": params})
    status, reply = post(daemon, body)
    assert status == 200
    if isinstance(reply, dict) and "error" in reply:
        assert reply["error"]["code"] in (-32600, -32601, -32602, -32004, -32009, -32010)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_random_bytes_are_parse_or_request_errors(daemon, body):
    status, reply = post(daemon, body)
    assert status in (200, 204)
    if status == 200:
        assert reply["error"]["code"] in (-32700, -32600) if isinstance(reply, dict) else isinstance(reply, list)


def test_invalid_utf8_deep_nesting_and_oversized_bodies(daemon):
    assert post(daemon, b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}')[1]["error"]["code"] == -32700
    deep = b"[" * 100_000 + b"]" * 100_000
    status, reply = post(daemon, deep)
    assert status == 200 and reply["error"]["code"] in (-32700, -32600)
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket)
    s.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (65 * 2**20))
    head = s.recv(4096)
    s.close()
    assert head.startswith(b"HTTP/1.1 413") and b"larger than the limit" in head  # refused unread
    assert daemon.client.ping()


def test_commands_with_quotes_unicode_and_newlines_run_verbatim(daemon, tmp_path):
    command = 'printf "%s\\n" "it\'s \\"quoted\\"" \'$HOME stays\' "ünïcødé ✓"\necho second line'
    (tmp_path / "spec.json").write_text(
        msgspec.json.encode({"name": "verbatim", "jobs": [{"name": "v", "command": command}]}).decode()
    )
    wf = daemon.call("workflows.create", {"spec_text": (tmp_path / "spec.json").read_text(), "cwd": str(tmp_path)})
    daemon.wait(wf["id"])
    job = daemon.jobs(wf["id"])["v"]
    assert job.command == command and job.status == "completed"
    out = open(daemon.attempts(job.id)[0].stdout_path, encoding="utf-8").read()
    assert out == 'it\'s "quoted"\n$HOME stays\nünïcødé ✓\nsecond line\n'


def test_a_corrupt_database_gives_a_clear_error(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "torcd.store.db").write_bytes(b"this is not a database" * 100)
    r = subprocess.run(
        [sys.executable, "-m", "torcd", "--socket", str(tmp_path / "s" / "sock"), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "cannot open the database" in r.stderr and "Traceback" not in r.stderr


def test_a_database_from_a_newer_torcd_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / "torcd.store.db") as db:
        db.execute("PRAGMA user_version = 999")
    r = subprocess.run(
        [sys.executable, "-m", "torcd", "--socket", str(tmp_path / "s" / "sock"), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "newer than this torcd" in r.stderr


def probe_as(user, socket_path: str) -> str:
    """Fork, become `user`, try a ping over the socket; return what happened."""
    import socket

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec needed, so nothing depends on what the other user may read
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(socket_path)
                s.sendall(
                    b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n"
                    b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
                )
                out = s.recv(200).split(b"\r\n")[0]
            except OSError as e:
                out = f"connect-refused {e.errno}".encode()
            os.write(w, out)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def test_another_user_is_refused(make_daemon, other_user):
    import tempfile

    from torcctl.transport import Transport

    d = make_daemon()
    outer = tempfile.mkdtemp(prefix="torcpy-peer-", dir="/tmp")  # traversable by the other user
    os.chmod(outer, 0o755)
    d.socket = os.path.join(outer, "run", "torcd.sock")
    d.client = Transport(d.socket)
    d.start()
    try:
        assert probe_as(other_user, d.socket) == "connect-refused 13"  # the 0700 directory keeps it out
        # Even with the directory and the socket opened up, the peer-uid check refuses it.
        os.chmod(os.path.dirname(d.socket), 0o755)
        os.chmod(d.socket, 0o666)
        answer = probe_as(other_user, d.socket)
        assert answer.startswith("HTTP/1.1 403"), answer
        assert d.call("workflows.list") == []
        assert f'"peer_uid": {other_user.pw_uid}' in d.log.read_text()
    finally:
        d.stop()
        shutil.rmtree(outer, ignore_errors=True)
