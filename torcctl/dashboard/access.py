"""Who may see the dashboard, decided without I/O: a loopback Host (no DNS rebinding), then the
URL's token or a session cookie, then for a change the page's own Origin and its CSRF token. The
server adds the one fact this cannot know: which user holds the other end of the connection."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Literal

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD"})
MAX_SESSIONS = 1000  # a browser that logs in again and again evicts its oldest sessions, not ours

Outcome = Literal["allow", "login", "refuse"]


@dataclass(frozen=True)
class Seen:
    """What a request shows of itself."""

    method: str
    host: str | None
    origin: str | None = None
    token: str | None = None  # ?token= in the URL
    session: str | None = None  # the cookie
    csrf: str | None = None  # the X-Torc-CSRF header
    peer_is_user: bool = True  # the connection comes from a process of this user
    websocket: bool = False  # a WebSocket upgrade: no CORS guards it, so its Origin must be ours


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    status: int = 200  # 401 or 403 when refused
    reason: str = ""


def host_name(host: str) -> str:
    """`localhost:8080` → `localhost`; `[::1]:80` → `[::1]`."""
    if host.startswith("["):
        end = host.find("]") + 1
        if end and (end == len(host) or host[end] == ":"):
            return host[:end]
        return host  # `[::1]evil.example`: not a bracketed address and a port
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass
class Sessions:
    """The URL's token and the sessions it was exchanged for, each with its CSRF token."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: dict[str, str] = field(default_factory=dict)  # session id → its CSRF token

    def token_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    def open(self) -> str:
        """A new session (for a browser that showed the token)."""
        while len(self.csrf) >= MAX_SESSIONS:
            del self.csrf[next(iter(self.csrf))]
        sid = secrets.token_urlsafe(32)
        self.csrf[sid] = secrets.token_urlsafe(32)
        return sid

    def known(self, session: str | None) -> bool:
        return session is not None and session in self.csrf

    def csrf_matches(self, session: str | None, csrf: str | None) -> bool:
        expected = self.csrf.get(session or "")
        return expected is not None and csrf is not None and hmac.compare_digest(csrf.encode(), expected.encode())


def judge(seen: Seen, sessions: Sessions) -> Verdict:
    """Allow, open a session (the token is right), or refuse with 401/403 and why."""
    if not seen.peer_is_user:
        return Verdict("refuse", 403, "this dashboard belongs to another user")
    if seen.host is None or host_name(seen.host.lower()) not in LOOPBACK_NAMES:
        return Verdict("refuse", 403, "the Host header is not this machine's loopback address")
    if sessions.known(seen.session):
        if seen.method in SAFE_METHODS and not seen.websocket:
            return Verdict("allow")
        if seen.origin is None or seen.origin.lower() != f"http://{seen.host.lower()}":
            return Verdict("refuse", 403, "a change or a live stream must come from the dashboard's own page (Origin)")
        if seen.websocket:
            return Verdict("allow")
        if not sessions.csrf_matches(seen.session, seen.csrf):
            return Verdict("refuse", 403, "a change must carry the page's CSRF token")
        return Verdict("allow")
    if seen.token is not None and seen.method in SAFE_METHODS and not seen.websocket:
        if sessions.token_matches(seen.token):
            return Verdict("login")
        return Verdict("refuse", 401, "wrong token: open the URL that `torcctl dashboard` printed")
    return Verdict("refuse", 401, "no session: open the URL that `torcctl dashboard` printed")
