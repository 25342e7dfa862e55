"""Who may call what: the admin door, and one credential per Slurm allocation.

The Unix socket (our uid only) and the admin token in STATE_DIR/token can do everything. Each
allocation gets a credential of its own, written 0600 where only the user can read it; it can
only register, poll and finish workers of that allocation's workflow, read and write that
workflow's user data (what its jobs hand each other), and add jobs to it from a job running in
that allocation (`jobs.spawn`). The daemon keeps a hash
of it, never the credential itself.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
from typing import Any

import msgspec

from torcd.errors import InvalidParams

PREFIX = "torc-alloc"
# Jobs in an allocation run with its credential: they may read and write their workflow's user data,
# and add jobs to it from a job running in that allocation (jobs.spawn).
WORKER_METHODS = frozenset(
    {
        "workers.register",
        "workers.poll",
        "workers.finish",
        "user_data.get",
        "user_data.set",
        "user_data.list",
        "jobs.spawn",
        "jobs.lineage",
    }
)


class Caller(msgspec.Struct, frozen=True):
    """The party behind a request: admin (no allocation) or one allocation's workers."""

    allocation_id: int | None = None
    workflow_id: int | None = None

    @property
    def admin(self) -> bool:
        return self.allocation_id is None


class RequestKey(msgspec.Struct, frozen=True):
    """A request's idempotency key, and what the request was (its method and a hash of its
    params): a repeat must be the same request, or it is refused."""

    key: str
    method: str
    params_hash: str

    @classmethod
    def of(cls, key: str, method: str, params: Any) -> RequestKey:
        digest = hashlib.sha256(msgspec.json.encode(params, order="sorted")).hexdigest()
        return cls(key, method, digest)

    def check(self, stored_method: str | None, stored_hash: str | None) -> None:
        if stored_method is not None and (stored_method, stored_hash) != (self.method, self.params_hash):
            raise InvalidParams(
                f"this Idempotency-Key was already used for another request ({stored_method}"
                + (" with other params" if stored_method == self.method else "")
                + "); nothing was done: send a new key for a new request"
            )


ADMIN = Caller()
# Set by the RPC layer for the request being served.
current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller", default=ADMIN)
idempotency_key: contextvars.ContextVar[RequestKey | None] = contextvars.ContextVar("idempotency_key", default=None)


def new_credential(allocation_id: int) -> tuple[str, str]:
    """A fresh credential for an allocation, and the hash the daemon keeps."""
    token = f"{PREFIX}.{allocation_id}.{secrets.token_urlsafe(32)}"
    return token, digest(token)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def allocation_of(token: str) -> int | None:
    """The allocation a credential claims to be for (checked against its hash afterwards)."""
    prefix, _, rest = token.partition(".")
    number, _, secret = rest.partition(".")
    if prefix != PREFIX or not secret or not number.isascii() or not number.isdigit() or len(number) > 18:
        return None
    return int(number)


def matches(token: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and hmac.compare_digest(digest(token), stored_hash)
