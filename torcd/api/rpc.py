"""JSON-RPC 2.0: decode requests, validate params, call the handler, encode replies.

This layer only translates. The methods are a table (`handlers.METHODS`): for each name, its
params type and the handler that serves it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
import structlog

from torcd.credentials import ADMIN, WORKER_METHODS, Caller, RequestKey, current_caller, idempotency_key
from torcd.errors import TorcError, Unauthorized
from torcd.store.db import serving_request

log = structlog.get_logger("torcd.api.rpc")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603

_encoder = msgspec.json.Encoder()


class Request(msgspec.Struct, forbid_unknown_fields=True):
    jsonrpc: str
    method: str
    params: dict[str, Any] | None = None
    id: int | str | None = msgspec.field(default=None)


Methods = Mapping[str, tuple[type, Callable[[Any], Callable[[Any], Awaitable[Any]]]]]


def _error(id_: Any, code: int, message: str, data: Any = None) -> dict:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": err}


def _field_of(e: msgspec.ValidationError) -> str | None:
    text = str(e)
    return text.rpartition(" - at `")[2].rstrip("`") if " - at `" in text else None


async def _call_one(methods: Methods, target: Any, raw: Any, caller: Caller, key: str | None) -> dict | None:
    if not isinstance(raw, dict):
        return _error(None, INVALID_REQUEST, "invalid request: expected a JSON object")
    try:
        req = msgspec.convert(raw, Request)
    except msgspec.ValidationError as e:
        return _error(
            raw.get("id") if isinstance(raw.get("id"), (int, str)) else None, INVALID_REQUEST, f"invalid request: {e}"
        )
    if req.jsonrpc != "2.0":
        return _error(req.id, INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
    entry = methods.get(req.method)
    if entry is None:
        return _error(req.id, METHOD_NOT_FOUND, f"method not found: {req.method}")
    if not caller.admin and req.method not in WORKER_METHODS:
        log.warning("rpc_refused", method=req.method, allocation_id=caller.allocation_id)
        return _error(
            req.id,
            Unauthorized.code,
            f"an allocation's credential may not call {req.method}; "
            "it may only call " + ", ".join(sorted(WORKER_METHODS)),
        )
    params_type, bind = entry
    try:
        params: Any = msgspec.convert(req.params or {}, params_type)
    except msgspec.ValidationError as e:
        field = _field_of(e)
        return _error(
            req.id, INVALID_PARAMS, f"invalid params for {req.method}: {e}", {"field": field} if field else None
        )
    current_caller.set(caller)
    serving_request.set(True)
    # A retried request carries the same key; with the request's id it names this one request,
    # which must be the same method with the same params.
    idempotency_key.set(None if key is None else RequestKey.of(f"{key[:200]}:{req.id!r}", req.method, req.params))
    try:
        result = await bind(target)(params)
    except TorcError as e:
        return _error(req.id, e.code, e.message, e.data)
    except Exception:
        log.exception("rpc_internal_error", method=req.method)
        return _error(req.id, INTERNAL_ERROR, f"internal error in {req.method}; see the daemon log")
    if "id" not in raw:
        return None  # a notification gets no reply
    return {"jsonrpc": "2.0", "id": req.id, "result": result}


async def handle(
    methods: Methods, target: Any, body: bytes, caller: Caller = ADMIN, key: str | None = None
) -> bytes | None:
    """Serve one HTTP body: a single request or a batch. None means no content."""
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        return _encoder.encode(_error(None, PARSE_ERROR, f"parse error: {e}"))
    except RecursionError:
        return _encoder.encode(_error(None, PARSE_ERROR, "parse error: nested too deeply"))
    if isinstance(raw, list):
        if not raw:
            return _encoder.encode(_error(None, INVALID_REQUEST, "invalid request: empty batch"))
        replies = [r for r in [await _call_one(methods, target, item, caller, key) for item in raw] if r is not None]
        return _encoder.encode(replies) if replies else None
    reply = await _call_one(methods, target, raw, caller, key)
    return _encoder.encode(reply) if reply is not None else None
