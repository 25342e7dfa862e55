"""A request retried after its reply was lost is not applied twice.

Under socket activation the socket outlives a crashed daemon: the client's retry reaches the
restarted one. Here a small supervisor plays systemd: it holds the listening socket and starts
torcd on it again whenever it dies.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
from conftest import REPO

from torcctl.transport import Transport


class Supervisor:
    """Holds a listening Unix socket and (re)starts torcd on it, as systemd's socket activation does."""

    def __init__(self, tmp: Path, crash_first_at: str):
        self.tmp, self.crash_first_at = tmp, crash_first_at
        self.path = str(tmp / "run" / "torcd.sock")
        os.makedirs(os.path.dirname(self.path), mode=0o700)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self.starts = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        fd = self.sock.fileno()
        while not self.done.is_set():
            env = {k: v for k, v in os.environ.items() if not k.startswith("TORC_REQUIRE")}
            env.pop("TORCD_CRASH_AT", None)
            if self.starts == 0:
                env["TORCD_CRASH_AT"] = self.crash_first_at
            self.starts += 1
            with open(self.tmp / "torcd.log", "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        "bash",
                        "-c",
                        f'exec 3<&{fd} {fd}<&-; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" -m torcd --state-dir "$1"',
                        sys.executable,
                        str(self.tmp / "state"),
                    ],
                    pass_fds=(fd,),
                    stdout=log,
                    stderr=log,
                    env=env,
                    cwd=REPO,
                )
            self.proc.wait()

    def stop(self) -> None:
        self.done.set()
        Transport(self.path).call("shutdown")
        self.thread.join(30)
        self.sock.close()


def test_a_submit_retried_after_a_crash_right_after_the_commit_creates_one_workflow(tmp_path):
    sup = Supervisor(tmp_path, crash_first_at="after_create")
    try:
        (tmp_path / "once.yaml").write_text("name: once\njobs:\n  - name: a\n    command: echo ran >> ran.txt\n")
        r = subprocess.run(
            [sys.executable, "-m", "torcctl", "--socket", sup.path, "--no-autostart", "submit", "once.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r
        assert sup.starts == 2  # it did crash after the commit, and the retry reached the new daemon
        client = Transport(sup.path)
        workflows = client.call("workflows.list")
        assert [w["id"] for w in workflows] == [int(r.stdout.strip())]
        deadline = time.monotonic() + 30
        while client.call("workflows.show", {"workflow_id": workflows[0]["id"]})["state"] == "active":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (tmp_path / "ran.txt").read_text() == "ran\n"  # the job ran once
    finally:
        sup.stop()


def test_a_repeated_key_gets_the_first_result_and_changes_nothing(daemon, tmp_path):
    from torcctl.transport import _UnixConnection

    body = msgspec.json.encode(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "workflows.create",
            "params": {"spec_text": "name: k\njobs:\n  - name: a\n    command: 'true'\n", "cwd": str(tmp_path)},
        }
    )

    def post(key: str) -> dict:
        c = _UnixConnection(daemon.socket, 30)
        try:
            c.request("POST", "/rpc", body, {"Idempotency-Key": key})
            return msgspec.json.decode(c.getresponse().read())
        finally:
            c.close()

    first, again, other = post("abc:1"), post("abc:1"), post("abc:2")
    assert first["result"]["id"] == again["result"]["id"] != other["result"]["id"]
    assert len(daemon.call("workflows.list")) == 2
    daemon.wait(first["result"]["id"])
    reset = msgspec.json.encode(
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "workflows.reset_status",
            "params": {"workflow_id": first["result"]["id"]},
        }
    )
    for _ in range(2):
        c = _UnixConnection(daemon.socket, 30)
        c.request("POST", "/rpc", reset, {"Idempotency-Key": "reset:1"})
        assert msgspec.json.decode(c.getresponse().read())["result"] == {"reset": 1}
        c.close()
    assert daemon.call("workflows.show", {"workflow_id": first["result"]["id"]})["run_id"] == 2  # not 3


def test_a_key_replayed_with_another_method_or_params_is_refused_and_does_nothing(daemon, tmp_path):
    """Found in review: `workflows.delete` sent with the key of an earlier request answered
    `{"deleted": 1}` (the old result) while the workflow remained."""
    from torcctl.transport import _UnixConnection

    def post(key: str, method: str, params: dict) -> dict:
        c = _UnixConnection(daemon.socket, 30)
        try:
            body = msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
            c.request("POST", "/rpc", body, {"Idempotency-Key": key})
            return msgspec.json.decode(c.getresponse().read())
        finally:
            c.close()

    spec = {"spec_text": "name: k\njobs:\n  - name: a\n    command: 'true'\n", "cwd": str(tmp_path)}
    a = post("k:1", "workflows.create", spec)["result"]["id"]
    b = post("k:2", "workflows.create", spec)["result"]["id"]
    daemon.wait(a), daemon.wait(b)
    assert post("k:3", "workflows.delete", {"workflow_id": a})["result"] == {"deleted": a}
    other_params = post("k:3", "workflows.delete", {"workflow_id": b})
    assert other_params["error"]["code"] == -32602, other_params
    assert "already used for another request (workflows.delete with other params)" in other_params["error"]["message"]
    other_method = post("k:1", "workflows.delete", {"workflow_id": b})
    assert "already used for another request (workflows.create)" in other_method["error"]["message"], other_method
    assert [w["id"] for w in daemon.call("workflows.list")] == [b]  # nothing was deleted by either
    assert post("k:3", "workflows.delete", {"workflow_id": a})["result"] == {
        "deleted": a
    }  # a true repeat still answers
