"""Opening the daemon's doors: its state directory (locked), the Unix socket (or the one systemd
passes), the TLS context and the admin token of the TCP door."""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import secrets
import socket
import ssl
import stat
from typing import IO

from torcd.config import Config
from torcd.errors import DaemonError
from torcd.ownership import check_shared_dir, make_private_dir, open_private_file, owner_name
from torcd.systemd import passed_socket

BACKLOG = 1024  # connections waiting to be accepted: hundreds of clients may connect at once


def lock_state_dir(config: Config) -> IO[str]:
    """Make (or check) the private state dir and hold its lock; a second daemon is refused."""
    state_dir = config.paths.state_dir
    try:
        make_private_dir(state_dir, "the state dir")
        lock = os.fdopen(
            open_private_file(os.path.join(state_dir, "torcd.lock"), os.O_RDWR | os.O_APPEND, "the lock file"), "a+"
        )
        # Made private before SQLite creates it (its WAL and shm files take the same mode).
        os.close(open_private_file(config.db_path, os.O_RDWR, "the database"))
    except OSError as e:
        raise DaemonError(
            f"cannot use the state dir {state_dir}: {e.strerror}" + (f" ({e.filename})" if e.filename else "")
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        other = lock.read().strip() or "?"
        raise DaemonError(f"another torcd (pid {other}) is using the state dir {state_dir}") from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def listening_socket(path: str) -> tuple[socket.socket, bool]:
    """The socket to serve on, and whether systemd passed it (then it is systemd's to keep)."""
    sock = passed_socket()
    if sock is not None:
        return sock, True
    try:
        return _bind(path), False
    except OSError as e:
        raise DaemonError(f"cannot listen on {path}: {e.strerror}") from None


def _bind(path: str) -> socket.socket:
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        make_private_dir(parent, "the socket's directory")
    else:  # the user's choice (a project dir, /tmp): keep its mode, but it must not be a trap
        check_shared_dir(parent, "the socket's directory")
    if os.path.lexists(path):
        st = os.lstat(path)
        if st.st_uid != os.getuid():
            raise DaemonError(
                f"{path} belongs to {owner_name(st.st_uid)}, not to you; remove it or choose another --socket"
            )
        if not stat.S_ISSOCK(st.st_mode):
            raise DaemonError(f"{path} exists and is not a socket; remove it or choose another --socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody is listening
        else:
            raise DaemonError(f"another torcd is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def tcp_socket(host: str, port: int) -> socket.socket:
    """The TCP door's listening socket, or a one-line error (a port already in use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DaemonError(
                f"cannot listen on {host}:{port}: the port is already in use (another torcd, or "
                "another program); choose another --listen port"
            ) from None
        raise DaemonError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def tls_context(tls: tuple[str, str] | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(*tls)
    except (OSError, ssl.SSLError) as e:
        raise DaemonError(f"cannot load the TLS certificate {tls[0]} and key {tls[1]}: {e}") from None
    return ctx


def ensure_token(path: str) -> str:
    """The admin bearer token for the TCP door; created 0600 on first use."""
    with os.fdopen(open_private_file(path, os.O_RDWR, "the token file"), "r+") as f:
        token = f.read().strip()
        if not token:
            token = secrets.token_urlsafe(32)
            f.write(token + "\n")
    return token


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
