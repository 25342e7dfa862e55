"""The errors torcctl raises, to the CLI and to Python callers alike: one base, and the daemon's
refusals as classes named for what they mean (each the daemon's JSON-RPC error code)."""

from __future__ import annotations

from typing import Any

import msgspec

from torcd import errors as daemon_errors


class TorcError(Exception):
    """Base of every error torcctl raises."""


class ConnectError(TorcError):
    """No daemon answers, or the one that does is not yours, or it cannot be trusted."""


class RpcError(TorcError):
    """The daemon refused a request: `message` says why, `data` may name the field."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    @property
    def field(self) -> str | None:
        return self.data.get("field") if isinstance(self.data, dict) else None


class NotFound(RpcError):
    """No such workflow, job or user data."""


class InvalidParams(RpcError):
    """A request's argument is wrong; `field` names it."""


class InvalidTransition(RpcError):
    """The request does not apply to the thing in its present state (retrying a running job)."""


class Unauthorized(RpcError):
    """The credential may not do this."""


class TooFast(RpcError):
    """Asked too often for now; `retry_after` says in how many seconds to ask again."""

    @property
    def retry_after(self) -> float:
        value = self.data.get("retry_after") if isinstance(self.data, dict) else None
        return float(value) if isinstance(value, (int, float)) else 1.0


class SpecProblem(msgspec.Struct, frozen=True):
    """One error of a spec: where it is and what is wrong."""

    message: str  # as printed: `spec.yaml:12: ... (at $.jobs[3].depends_on)`
    file: str | None = None
    line: int | None = None
    field: str | None = None


class SpecError(RpcError):
    """A spec is invalid. `errors` lists every error found (up to 50), in line order."""

    def __init__(self, code: int, message: str, data: Any = None, errors: list[SpecProblem] | None = None):
        super().__init__(code, message, data)
        self.errors: list[SpecProblem] = errors or [SpecProblem(message, **_where(data))]

    def __str__(self) -> str:
        if len(self.errors) <= 1:
            return self.message
        return "\n".join(e.message for e in self.errors)


def _where(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        return {}
    return {k: data.get(k) for k in ("file", "line", "field") if data.get(k) is not None}


_BY_CODE: dict[int, type[RpcError]] = {
    daemon_errors.NotFound.code: NotFound,
    daemon_errors.InvalidParams.code: InvalidParams,
    daemon_errors.InvalidTransition.code: InvalidTransition,
    daemon_errors.Unauthorized.code: Unauthorized,
    daemon_errors.SpecError.code: SpecError,
    daemon_errors.TooFast.code: TooFast,
}


def rpc_error(code: int, message: str, data: Any = None) -> RpcError:
    """The error class the daemon's code stands for (RpcError itself for the rest)."""
    return _BY_CODE.get(code, RpcError)(code, message, data)
