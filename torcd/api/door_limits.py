"""Limits on the TCP door: how many connections, from how many peers, for how long idle.

Anyone who can reach the port can open connections before any credential is checked; each
costs the daemon a descriptor. Without limits, a thousand idle connections from another user
on the host used every descriptor the daemon had: the owner's own commands and the jobs it
started failed ("Too many open files"). So connections past a total or a per-peer cap are
closed as they arrive, idle ones are closed by the server (`IDLE_TIMEOUT`), and descriptors
are kept in reserve for the Unix socket and for starting jobs.
"""

from __future__ import annotations

import asyncio
import collections
import resource
import time
from collections.abc import Callable
from typing import cast

import structlog
from aiohttp import web

log = structlog.get_logger("torcd.api.doors")

# asyncio accepts up to the backlog's worth of connections at once before any is looked at: each
# holds a descriptor until the guard closes it, so the batch is small and its descriptors reserved.
BACKLOG = 128
RESERVED_DESCRIPTORS = 256 + BACKLOG  # kept for the Unix socket, the database, the jobs' logs and pidfds
DESCRIPTORS_PER_JOB = 4  # two logs while it starts, its pidfd, a spare
REFUSALS_LOGGED_EVERY = 10.0  # seconds: a flood of refusals is one line per this long
HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS handshake may take before the connection is dropped


def connection_cap(wanted: int, max_cpus: int) -> int:
    """At most `wanted` TCP connections, and never so many that the reserve is touched."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = soft - RESERVED_DESCRIPTORS - DESCRIPTORS_PER_JOB * max_cpus
    return max(8, min(wanted, spare))


class ConnectionGuard:
    """Counts open TCP connections, in all and by peer address, and admits one only under both caps."""

    def __init__(self, total: int, per_peer: int, clock: Callable[[], float] = time.monotonic):
        self.total, self.per_peer = total, per_peer
        self.open = 0
        self.by_peer: collections.Counter[str] = collections.Counter()
        self._clock = clock
        self._refused = 0
        self._last_said = float("-inf")

    def enter(self, peer: str) -> bool:
        if self.open >= self.total or self.by_peer[peer] >= self.per_peer:
            self._refused += 1
            now = self._clock()
            if now - self._last_said >= REFUSALS_LOGGED_EVERY:
                log.warning(
                    "tcp_connections_refused",
                    count=self._refused,
                    peer=peer,
                    open=self.open,
                    from_peer=self.by_peer[peer],
                    max_total=self.total,
                    max_per_peer=self.per_peer,
                )
                self._refused, self._last_said = 0, now
            return False
        self.open += 1
        self.by_peer[peer] += 1
        return True

    def leave(self, peer: str) -> None:
        self.open -= 1
        self.by_peer[peer] -= 1
        if not self.by_peer[peer]:
            del self.by_peer[peer]

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        return _Guarded(self, inner)


class _Guarded(asyncio.Protocol):
    """A connection's protocol that hands it to aiohttp's only if the guard admits it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol):
        self._guard, self._inner, self._peer = guard, inner, ""
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else "?"
        if not self._guard.enter(self._peer):
            # A stream server's connection: a full Transport, which can abort.
            cast(asyncio.Transport, transport).abort()  # its descriptor is free at once
            return
        self._admitted = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self._guard.leave(self._peer)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSockSite(web.SockSite):
    """aiohttp's site on a socket we bound, with each connection passed through the guard."""

    def __init__(self, runner: web.AppRunner, sock, guard: ConnectionGuard, **kwargs):
        super().__init__(runner, sock, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._guard.protocol(server()),
            sock=self._sock,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._ssl_context else None,
        )
