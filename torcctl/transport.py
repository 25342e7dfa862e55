"""A small synchronous JSON-RPC client for torcd over its Unix socket (or HTTP).

Uses the standard library's http.client so that a command starts fast.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any, TypeVar

import msgspec

from torcctl.errors import ConnectError, RpcError, rpc_error
from torcd.errors import NotFound
from torcd.ownership import UnsafePath, check_socket, open_private_file
from torcd.paths import default_state_dir
from torcd.protocol import Event

T = TypeVar("T")
_ids = itertools.count(1)
NOT_FOUND = NotFound.code
_event_decoder = msgspec.json.Decoder(Event)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        # Nothing is sent until we know the daemon is ours: another user may have made the
        # socket's directory first and be listening there.
        try:
            check_socket(self.path)
        except UnsafePath as e:
            raise ConnectError(e.message) from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        uid = peer_uid(sock)
        if uid != os.getuid():
            sock.close()
            raise ConnectError(
                f"the process listening on {self.path} runs as uid {uid}, not as you; refusing to send anything to it"
            )
        self.sock = sock


def _stream_refusal(body: bytes) -> str:
    try:
        return str(msgspec.json.decode(body)["error"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return body.decode(errors="replace")


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class Transport:
    def __init__(self, socket_path: str, timeout: float | None = 120.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        # Each call carries a key of its own, the same on a retry: a daemon that already did what
        # a request asks (its reply lost when the connection dropped) answers with that result.
        self._keys = (f"{uuid.uuid4().hex}:{n}" for n in itertools.count(1))
        self.auth: dict[str, str] = {}
        self._lock = threading.Lock()  # one request at a time on the kept-alive connection
        self._streams = set[http.client.HTTPConnection]()  # event streams being read

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return _UnixConnection(self.socket_path, timeout if timeout is not None else self.timeout)

    def call(self, method: str, params: dict | None = None, result_type: type[T] | None = None) -> T | Any:
        with self._lock:
            return self._call(method, params, result_type)

    def _call(self, method: str, params: dict | None, result_type: type[T] | None) -> T | Any:
        body = msgspec.json.encode({"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params or {}})
        headers = {"Content-Type": "application/json", "Idempotency-Key": next(self._keys), **self.auth}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connection()
            try:
                self._conn.request("POST", "/rpc", body, headers)
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
            except ssl.SSLError as e:
                self.close()
                raise ConnectError(self._tls_refused(e)) from None
            except TimeoutError:
                self.close()
                raise ConnectError(f"torcd on {self.socket_path} did not answer within {self.timeout:g}s") from None
            except OSError as e:
                self.close()
                raise ConnectError(f"cannot reach torcd on {self.socket_path}: {e.strerror or e}") from None
        if resp.status != 200:
            raise RpcError(resp.status, f"HTTP {resp.status}: {data.decode(errors='replace')}")
        reply = msgspec.json.decode(data)
        if "error" in reply:
            err = reply["error"]
            raise rpc_error(err.get("code", 0), err.get("message", "unknown error"), err.get("data"))
        result = reply.get("result")
        return msgspec.convert(result, result_type) if result_type is not None else result

    def events(
        self,
        workflow_id: int | None,
        after: int = 0,
        until_done: bool = False,
        kinds: frozenset[str] | None = None,
        read_timeout: float | None = None,
        serve_label: str | None = None,
    ) -> Iterator[Event]:
        """Follow the workflow's events (every workflow's: None) (NDJSON stream) from sequence `after`,
        optionally only `kinds`. A stream the daemon drops midway raises ConnectError; none within
        `read_timeout`, TimeoutError."""
        conn = self._connection(timeout=read_timeout)
        which = "all=1" if workflow_id is None else f"workflow_id={workflow_id}&until_done={int(until_done)}"
        query = f"/events?{which}&after={after}"
        if kinds:
            query += "&kinds=" + ",".join(sorted(kinds))
        if serve_label is not None:  # the daemon runs this label's jobs while the stream is open
            query += "&serve_label=" + urllib.parse.quote(serve_label, safe="")
        try:
            self._streams.add(conn)
            conn.request("GET", query)
            resp = conn.getresponse()
            if resp.status == 404:
                raise rpc_error(NOT_FOUND, _stream_refusal(resp.read()))
            if resp.status != 200:
                raise RpcError(resp.status, _stream_refusal(resp.read()))
            for line in resp:
                if line.strip():
                    yield _event_decoder.decode(line)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ConnectError(f"no torcd answers on {self.socket_path}") from None
        except (http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            raise ConnectError(f"torcd on {self.socket_path} closed the event stream") from None
        finally:
            self._streams.discard(conn)
            conn.close()

    def cut_streams(self) -> None:
        """End the event streams being read, as if the daemon closed them (safe in a signal handler:
        a reader blocked on one wakes up)."""
        for conn in list(self._streams):
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

    def _tls_refused(self, e: ssl.SSLError) -> str:
        return f"cannot speak TLS with torcd at {self.socket_path}: {e.reason or e}"

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


def start_daemon(socket_path: str, state_dir: str | None, wait: float = 15.0) -> subprocess.Popen | None:
    """Start torcd in the background on `socket_path` and wait until it answers. A daemon that
    holds the socket but does not answer is named, not doubled; None if it answers after all."""
    held = listener(socket_path)
    if held is not None:
        pid, stopped = held
        if not stopped and Transport(socket_path).ping(3.0):
            return None  # only slow
        who = "pid unknown" if pid is None else f"pid {pid}"
        raise ConnectError(
            f"the daemon at {socket_path} does not answer ({who}"
            + (f", stopped: `kill -CONT {pid}` resumes it" if stopped else "")
            + "); not starting another while it holds the socket"
        )
    args = [sys.executable, "-m", "torcd", "--socket", socket_path, "--autostarted"]
    if state_dir:
        args += ["--state-dir", state_dir]
    log_dir = state_dir or default_state_dir()
    log_path = os.path.join(log_dir, "torcd.log")
    try:
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
        log = open_private_file(log_path, os.O_WRONLY | os.O_APPEND, "the daemon's log")
    except OSError as e:
        raise ConnectError(f"cannot start torcd: cannot write its log {log_path}: {e.strerror}") from None
    except UnsafePath as e:
        raise ConnectError(f"cannot start torcd: {e.message}") from None
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", start_new_session=True
        )  # not in the client's directory: it may go away
    finally:
        os.close(log)
    client = Transport(socket_path)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if client.ping(0.5):
            return proc
        if proc.poll() is not None:
            if client.ping(0.5):  # another client's autostart won the race
                return proc
            raise ConnectError(
                f"torcd exited with status {proc.returncode} while starting; see {os.path.join(log_dir, 'torcd.log')}"
            )
        time.sleep(0.05)
    proc.terminate()
    raise ConnectError(f"torcd did not answer on {socket_path} within {wait:g}s")


def listener(socket_path: str) -> tuple[int | None, bool] | None:
    """The pid of whoever accepts connections on the socket (None if it cannot be known) and
    whether that process is stopped; None when nobody does (no socket, or one left behind)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    try:
        sock.connect(socket_path)
        pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
    except (BlockingIOError, TimeoutError):
        return None, False  # listening, but its queue of connections is full
    except OSError:
        return None
    finally:
        sock.close()
    try:
        with open(f"/proc/{pid}/stat") as f:
            return pid, f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return pid, False


class TcpTransport(Transport):
    """The daemon's TCP door, as a job in an allocation reaches it: TORC_API_URL, the
    allocation's credential, and the certificate to trust for https."""

    def __init__(self, url: str, token: str | None, ca_file: str | None = None, timeout: float | None = 120.0):
        super().__init__(url, timeout)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectError(f"cannot use daemon URL {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.https, self.host, self.port = parts.scheme == "https", parts.hostname, parts.port
        self.ca_file = ca_file
        try:
            self.tls = ssl.create_default_context(cafile=ca_file) if self.https else None
        except (OSError, ssl.SSLError) as e:
            raise ConnectError(f"cannot read the CA file {ca_file} ($TORC_CA_FILE): {e}") from None
        if token:
            self.auth = {"Authorization": f"Bearer {token}"}

    def _tls_refused(self, e: ssl.SSLError) -> str:
        if isinstance(e, ssl.SSLCertVerificationError):
            trusted = f"the CA file {self.ca_file} ($TORC_CA_FILE)" if self.ca_file else "the system's CAs"
            return (
                f"the certificate of torcd at {self.socket_path} cannot be verified with {trusted}: {e.verify_message}"
            )
        return super()._tls_refused(e)

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        wait = timeout if timeout is not None else self.timeout
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=wait, context=self.tls)
        return http.client.HTTPConnection(self.host, self.port, timeout=wait)


def read_token(token_file: str | None) -> str | None:
    """The allocation's credential: $TORC_API_TOKEN, else the file that holds it."""
    token = os.environ.get("TORC_API_TOKEN")
    if token:
        return token.strip()
    if token_file:
        try:
            with open(token_file) as f:
                return f.read().strip()
        except OSError as e:
            raise ConnectError(f"cannot read token file {token_file}: {e.strerror}") from None
    return None
