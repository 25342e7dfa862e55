"""A small synchronous JSON-RPC client for torcd over its Unix socket (or HTTP).

Uses the standard library's http.client so that a command starts fast.
"""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import msgspec

from torcd.paths import default_state_dir
from torcd.protocol import Event

T = TypeVar("T")
_ids = itertools.count(1)
_event_decoder = msgspec.json.Decoder(Event)


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class ConnectError(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    def __init__(self, socket_path: str, timeout: float | None = 120.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return _UnixConnection(self.socket_path, timeout if timeout is not None else self.timeout)

    def call(self, method: str, params: dict | None = None, result_type: type[T] | None = None) -> T | Any:
        body = msgspec.json.encode({"jsonrpc": "2.0", "id": next(_ids), "method": method,
                                    "params": params or {}})
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connection()
            try:
                self._conn.request("POST", "/rpc", body, {"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                data = resp.read()
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                self.close()
                raise ConnectError(f"no torcd answers on {self.socket_path}: {e.strerror}") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a kept-alive connection the daemon closed; try once more
                if attempt == 2:
                    raise ConnectError(f"torcd on {self.socket_path} closed the connection") from None
        if resp.status != 200:
            raise RpcError(resp.status, f"HTTP {resp.status}: {data.decode(errors='replace')}")
        reply = msgspec.json.decode(data)
        if "error" in reply:
            err = reply["error"]
            raise RpcError(err.get("code", 0), err.get("message", "unknown error"), err.get("data"))
        result = reply.get("result")
        return msgspec.convert(result, result_type) if result_type is not None else result

    def events(self, workflow_id: int, after: int = 0, until_done: bool = False,
               kinds: frozenset[str] | None = None) -> Iterator[Event]:
        """Follow the workflow's events (NDJSON stream) from sequence `after`, optionally only `kinds`."""
        conn = self._connection(timeout=None)
        query = f"/events?workflow_id={workflow_id}&after={after}&until_done={int(until_done)}"
        if kinds:
            query += "&kinds=" + ",".join(sorted(kinds))
        try:
            conn.request("GET", query)
            resp = conn.getresponse()
            if resp.status != 200:
                raise RpcError(resp.status, resp.read().decode(errors="replace"))
            for line in resp:
                if line.strip():
                    yield _event_decoder.decode(line)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ConnectError(f"no torcd answers on {self.socket_path}") from None
        finally:
            conn.close()

    def ping(self, timeout: float = 2.0) -> bool:
        conn = self._connection(timeout)
        try:
            body = msgspec.json.encode({"jsonrpc": "2.0", "id": 0, "method": "ping"})
            conn.request("POST", "/rpc", body, {"Content-Type": "application/json"})
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def start_daemon(socket_path: str, state_dir: str | None, wait: float = 15.0) -> subprocess.Popen:
    """Start torcd in the background on `socket_path` and wait until it answers."""
    args = [sys.executable, "-m", "torcd", "--socket", socket_path]
    if state_dir:
        args += ["--state-dir", state_dir]
    log_dir = state_dir or default_state_dir()
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(log_dir, "torcd.log"), "ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    client = Client(socket_path)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if client.ping(0.5):
            return proc
        if proc.poll() is not None:
            if client.ping(0.5):  # another client's autostart won the race
                return proc
            raise ConnectError(f"torcd exited with status {proc.returncode} while starting; "
                               f"see {os.path.join(log_dir, 'torcd.log')}")
        time.sleep(0.05)
    proc.terminate()
    raise ConnectError(f"torcd did not answer on {socket_path} within {wait:g}s")
