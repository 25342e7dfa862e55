"""The daemon's errors, each mapped to one stable JSON-RPC error code."""

from __future__ import annotations


class TorcError(Exception):
    code = -32000

    def __init__(self, message: str, data: dict | None = None):
        super().__init__(message)
        self.message = message
        self.data = data


class SpecError(TorcError):
    """A workflow spec is invalid; names the file, line and field."""

    code = -32010

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        elif line:
            where = f"line {line}: "
        at = f" (at {field})" if field else ""
        super().__init__(f"{where}{message}{at}", {"file": file, "line": line, "field": field})
        self.file, self.line, self.field = file, line, field


class NotFound(TorcError):
    code = -32004


class InvalidTransition(TorcError):
    code = -32009


class Unauthorized(TorcError):
    code = -32001


class TooFast(TorcError):
    """Refused for now: asked too often; `data.retry_after` says in how many seconds to ask again."""

    code = -32029


class InvalidParams(TorcError):
    code = -32602


class DaemonError(TorcError):
    """The daemon cannot start or had to stop; the message says why."""
