"""HTTP API v1 handlers: parse, call the KV layer, answer. Nothing else.

Every refusal is an `ApiError` turned into JSON by `error_middleware`, which
also checks the token and records metrics, so handlers stay a few lines each.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from ringkv_node import protocol
from ringkv_node.admin_api import ADMIN_ROUTES
from ringkv_node.coordinator import NotEnoughReplicasError
from ringkv_node.errors import ApiError
from ringkv_node.groupcommit import ClosedError
from ringkv_node.internal_api import INTERNAL_ROUTES
from ringkv_node.protocol import key_or_error
from ringkv_node.records import Record, is_live
from ringkv_node.state import METRICS_KEY, NODE_KEY, SETTINGS_KEY
from ringkv_node.storage import StorageError, StorageFullError

__all__ = ["endpoint", "routes"]

log = logging.getLogger("ringkv.node")

VERSION_HEADER = "X-Ringkv-Version"
EPOCH_HEADER = "X-Ringkv-Epoch"
OCTETS = "application/octet-stream"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(doc, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def error_response(err: ApiError) -> web.Response:
    return json_response(err.body(), err.status)


_HTTP_CODES = {
    404: ("not_found", "no such route: {method} {path}"),
    405: ("method_not_allowed", "method {method} is not allowed on {path}"),
    413: ("too_large", "request body is too large"),
}


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> ApiError:
    code, template = _HTTP_CODES.get(exc.status, ("bad_request", exc.reason))
    message = template.format(method=request.method, path=request.path)
    if exc.status == 413:
        message = exc.text or message
    return ApiError(exc.status, code, message)


def _auth_scope(path: str) -> str:
    if path.startswith(("/admin/", "/internal/")):
        return "always"
    if path.startswith("/v1/"):
        return "data"
    return "open"


def _check_auth(request: web.Request, scope: str, token: str | None, data_auth: bool) -> None:
    if scope == "open" or (scope == "data" and (token is None or not data_auth)):
        return
    if token is None:
        raise ApiError(403, "forbidden", "admin and internal routes need the node to have --token")
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise ApiError(401, "unauthorized", "missing Authorization: Bearer <token>")
    if not hmac.compare_digest(header[7:].encode(), token.encode()):
        raise ApiError(403, "forbidden", "wrong token")


def endpoint(
    route: str, scope: str | None = None, *, token: str | None = None, data_auth: bool = True
) -> Callable[[Handler], Handler]:
    """Wrap a handler: token check, errors as JSON, metrics.

    A wrapper per route rather than an aiohttp middleware: middlewares cost a
    `functools.update_wrapper` per request, which shows on the GET path. A
    `scope` of None means "decide by path" (the catch-all routes).
    """

    # decided once per route, not per request
    open_route = scope == "open" or (scope == "data" and (token is None or not data_auth))
    tell_epoch = scope == "data"  # clients refresh their ring when this moves

    def wrap(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            app = request.app
            resp: web.StreamResponse
            try:
                if not open_route:
                    _check_auth(request, scope or _auth_scope(request.path), token, data_auth)
                resp = await handler(request)
            except ApiError as exc:
                resp = error_response(exc)
            except web.HTTPException as exc:
                resp = error_response(_from_http_exception(exc, request))
            except StorageFullError as exc:
                resp = error_response(ApiError(507, "storage_full", str(exc)))
            except NotEnoughReplicasError as exc:
                resp = error_response(
                    ApiError(
                        503,
                        "not_enough_replicas",
                        str(exc),
                        {"needed": exc.needed, "answered": exc.answered},
                    )
                )
            except (StorageError, ClosedError) as exc:
                resp = error_response(ApiError(503, "unavailable", str(exc)))
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.path)
                resp = error_response(ApiError(500, "internal", "internal error; see the log"))
            if tell_epoch:
                resp.headers[EPOCH_HEADER] = str(app[NODE_KEY].ring.epoch)
            app[METRICS_KEY].observe_request(
                route, request.method, resp.status, time.perf_counter() - started
            )
            return resp

        wrapped.__name__ = handler.__name__
        return wrapped

    return wrap


def _method_not_allowed(allowed: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = error_response(
            ApiError(
                405,
                "method_not_allowed",
                f"method {request.method} is not allowed on {request.path}; use {allowed}",
            )
        )
        resp.headers["Allow"] = allowed
        return resp

    return handler


async def _no_route(request: web.Request) -> web.StreamResponse:
    raise ApiError.not_found(f"no such route: {request.method} {request.path}")


# -- data routes --------------------------------------------------------------


_NO_QUERY: dict[str, str] = {}


def _query(request: web.Request) -> Mapping[str, str]:
    """The query parameters, without parsing anything when there are none."""
    return request.query if "?" in request.raw_path else _NO_QUERY


def _level(query: Mapping[str, str], default: str) -> str:
    return protocol.parse_consistency(query.get("consistency")) or default


async def get_key(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    key = path_key(request)
    rec = await node.coordinator.read(key, _level(_query(request), node.settings.read_consistency))
    if not is_live(rec, node.kv.clock_ms()):
        return error_response(ApiError.not_found())
    assert rec is not None
    return web.Response(
        body=rec.value, content_type=OCTETS, headers={VERSION_HEADER: str(rec.version)}
    )


async def put_key(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    kv = node.kv
    limits = kv_limits(request)
    key = path_key(request)
    query = _query(request)
    level = _level(query, node.settings.write_consistency)
    ttl = protocol.parse_ttl(query.get("ttl"))
    length = request.content_length
    if length is not None and length > limits.max_value_bytes:
        raise ApiError.too_large(f"value is {length} bytes; the limit is {limits.max_value_bytes}")
    body = await request.read()
    if len(body) > limits.max_value_bytes:
        raise ApiError.too_large(
            f"value is {len(body)} bytes; the limit is {limits.max_value_bytes}"
        )
    rec = kv.stamp(body, ttl)
    result = await node.coordinator.write(key, rec, level)
    headers = {VERSION_HEADER: str(rec.version)}
    prev = result.previous
    if is_live(prev, kv.clock_ms()):
        assert prev is not None
        return web.Response(body=prev.value, status=200, content_type=OCTETS, headers=headers)
    return web.Response(status=201, headers=headers)


async def delete_key(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    kv = node.kv
    key = path_key(request)
    level = _level(_query(request), node.settings.write_consistency)
    rec = kv.stamp(b"", None, tombstone=True)
    result = await node.coordinator.write(key, rec, level)
    prev = result.previous
    if not is_live(prev, kv.clock_ms()):
        return error_response(ApiError.not_found())
    assert prev is not None
    return web.Response(
        body=prev.value, content_type=OCTETS, headers={VERSION_HEADER: str(rec.version)}
    )


async def list_keys(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    limits = kv_limits(request)
    query = request.query
    prefix_text = query.get("prefix", "")
    prefix = key_or_error(prefix_text, limits) if prefix_text else b""
    after_text = query.get("start_after")
    start_after = key_or_error(after_text, limits) if after_text else None
    limit = protocol.parse_limit(query.get("limit"))
    keys, nxt = await node.list_keys(prefix, start_after, limit)
    return json_response(
        {"keys": [k.decode() for k in keys], "next": None if nxt is None else nxt.decode()}
    )


async def batch(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    kv = node.kv
    limits = kv_limits(request)
    length = request.content_length
    if length is not None and length > limits.max_batch_bytes:
        raise ApiError.too_large(
            f"batch body is {length} bytes; the limit is {limits.max_batch_bytes}"
        )
    body = await request.read()
    binary = request.content_type == protocol.MSGPACK
    req = protocol.parse_batch(body, request.content_type, limits, request.query)
    level = req.consistency or node.settings.write_consistency
    stamped = [
        (op.key, kv.stamp(op.value, op.ttl_s, tombstone=op.op == "delete")) for op in req.ops
    ]
    previous: list[Record | None]
    if req.atomic:
        node.check_single_partition([op.key for op in req.ops])
        previous = await node.coordinator.write_atomic(stamped, level)
    else:
        results = await asyncio.gather(
            *(node.coordinator.write(k, r, level) for k, r in stamped), return_exceptions=True
        )
        previous = []
        for r in results:
            if isinstance(r, BaseException):
                raise r
            previous.append(r.previous)
    now = kv.clock_ms()
    out: list[dict[str, Any]] = []
    for op, (_, rec), prev in zip(req.ops, stamped, previous, strict=True):
        live = is_live(prev, now)
        item: dict[str, Any] = {"version": str(rec.version)}
        if op.op == "put":
            item["status"] = 200 if live else 201
        else:
            item["status"] = 200 if live else 404
        if live:
            assert prev is not None
            item["previous"] = prev.value if binary else protocol.b64(prev.value)
        else:
            item["previous"] = None
        out.append(item)
    doc = {"results": out, "atomic": req.atomic}
    if binary:
        return web.Response(body=protocol.encode_body(doc, True), content_type=protocol.MSGPACK)
    return json_response(doc)


# -- node routes --------------------------------------------------------------


async def status(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[NODE_KEY].status())


async def ring(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    resp = json_response(node.ring.to_dict())
    resp.headers[EPOCH_HEADER] = str(node.ring.epoch)
    return resp


async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"ok": True})


async def readyz(request: web.Request) -> web.StreamResponse:
    reasons = request.app[NODE_KEY].not_ready_reasons()
    if reasons:
        return json_response({"ready": False, "reasons": reasons}, 503)
    return json_response({"ready": True})


async def metrics(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    node.refresh_gauges()
    return web.Response(
        body=request.app[METRICS_KEY].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


_KV_PREFIX = "/v1/kv/"


def path_key(request: web.Request) -> bytes:
    """The key from the raw path, percent-decoded to bytes and validated.

    aiohttp's decoded `match_info` keeps invalid UTF-8 escapes such as `%FF` as
    literal text; a key must be refused, not silently renamed.
    """
    raw = request.raw_path.partition("?")[0][len(_KV_PREFIX) :]
    key = unquote_to_bytes(raw) if "%" in raw else raw.encode()
    return key_or_error(key, kv_limits(request))


def kv_limits(request: web.Request) -> Any:
    return request.app[SETTINGS_KEY].limits


_ROUTES: list[tuple[str, str, dict[str, Handler]]] = [
    ("/v1/kv/{key:[\\s\\S]+}", "data", {"GET": get_key, "PUT": put_key, "DELETE": delete_key}),
    ("/v1/keys", "data", {"GET": list_keys}),
    ("/v1/batch", "data", {"POST": batch}),
    ("/v1/ring", "data", {"GET": ring}),
    ("/v1/status", "data", {"GET": status}),
    ("/healthz", "open", {"GET": healthz, "HEAD": healthz}),
    ("/readyz", "open", {"GET": readyz, "HEAD": readyz}),
    ("/metrics", "open", {"GET": metrics}),
    *[
        (f"/internal/v1/{name}", "always", {("GET" if name == "ws" else "POST"): handler})
        for name, handler in INTERNAL_ROUTES.items()
    ],
    *[(path, "always", handlers) for path, handlers in ADMIN_ROUTES],
]


def routes(token: str | None, data_auth: bool) -> list[web.RouteDef]:
    """Every route, each path followed by its JSON 405, then a JSON 404 for the rest."""
    defs: list[web.RouteDef] = []
    for path, scope, handlers in _ROUTES:
        name = path.replace("{key:[\\s\\S]+}", "{key}")
        wrap = endpoint(name, scope, token=token, data_auth=data_auth)
        for method, handler in handlers.items():
            extra = {"allow_head": False} if method == "GET" else {}
            defs.append(web.RouteDef(method, path, wrap(handler), extra))
        allowed = ", ".join(handlers)
        defs.append(web.route("*", path, wrap(_method_not_allowed(allowed))))
    unmatched = endpoint("unmatched", token=token, data_auth=data_auth)
    defs.append(web.route("*", "/{tail:.*}", unmatched(_no_route)))
    return defs
