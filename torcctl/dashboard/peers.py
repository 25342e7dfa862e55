"""Which user holds the other end of a loopback TCP connection: Linux lists every socket with its
owner's uid in /proc/net/tcp, so a dashboard can refuse another user on the host even if they
learned the URL's token (from a shoulder, a shared terminal log, a process listing)."""

from __future__ import annotations

import ipaddress
import socket

PROC_TABLES = {socket.AF_INET: "/proc/net/tcp", socket.AF_INET6: "/proc/net/tcp6"}


def _proc_address(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """An address as /proc/net/tcp writes it: the IP's 32-bit words in host (little-endian) order."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    raw = ip.packed
    words = "".join(raw[i : i + 4][::-1].hex().upper() for i in range(0, len(raw), 4))
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return family, f"{words}:{port:04X}"


def peer_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The uid owning the socket at `peer` connected to our `local`; None where the kernel has no
    such table (not Linux). A connection the table does not list (it closed) is -1: nobody."""
    family, peer_at = _proc_address(*peer[:2])
    _, local_at = _proc_address(*local[:2])
    try:
        with open(PROC_TABLES[family], encoding="ascii") as table:
            next(table, None)  # the header
            for line in table:
                fields = line.split()
                if len(fields) > 7 and fields[1] == peer_at and fields[2] == local_at:
                    return int(fields[7])
    except FileNotFoundError:
        return None
    return -1
