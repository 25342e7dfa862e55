"""systemd integration: readiness, stopping and watchdog notifications (Type=notify), and the
listening socket systemd passes under socket activation. The protocol is a few datagrams and
environment variables; both are read once and removed from the environment jobs inherit."""

from __future__ import annotations

import os
import socket

LISTEN_FDS_START = 3


class Notifier:
    def __init__(self) -> None:
        path = os.environ.pop("NOTIFY_SOCKET", None)
        self.address = "\0" + path[1:] if path and path.startswith("@") else path
        usec, pid = os.environ.pop("WATCHDOG_USEC", None), os.environ.pop("WATCHDOG_PID", None)
        ours = usec and usec.isdigit() and (not pid or pid == str(os.getpid()))
        # systemd's advice: ping at half the interval it will wait.
        self.watchdog_interval = int(usec) / 2e6 if usec and ours else None

    def notify(self, *lines: str) -> None:
        if not self.address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            try:
                s.sendto("\n".join(lines).encode(), self.address)
            except OSError:
                pass  # a supervisor that went away must not take the daemon with it


def passed_socket() -> socket.socket | None:
    """The listening socket systemd passed us (socket activation), if it passed one."""
    pid, count = os.environ.pop("LISTEN_PID", None), os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid != str(os.getpid()) or not count or not count.isdigit() or int(count) < 1:
        return None
    sock = socket.socket(fileno=LISTEN_FDS_START)
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock
