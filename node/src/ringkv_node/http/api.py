"""HTTP API v1 handlers: parse, call the KV layer, answer. Nothing else.

Every refusal is an `ApiError` turned into JSON by the `endpoint` wrapper,
which also checks the token and records metrics, so handlers stay a few lines
each. The key routes live in `dataplane`, shared with the fast lane
(`frontdoor`), which serves most of them before aiohttp sees the connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from ringkv.ring import Ring
from ringkv_node.cluster import write_bulk
from ringkv_node.errors import ApiError
from ringkv_node.http import dataplane, parsing
from ringkv_node.http.admin_api import ADMIN_ROUTES
from ringkv_node.http.appkeys import METRICS_KEY, NODE_KEY, SETTINGS_KEY
from ringkv_node.http.backup_api import BACKUP_ROUTES
from ringkv_node.http.dataplane import api_error, check_auth
from ringkv_node.http.internal_api import INTERNAL_ROUTES
from ringkv_node.http.parsing import key_or_error
from ringkv_node.http.responses import Handler, error_response, json_response, read_body
from ringkv_node.model import records, wire
from ringkv_node.model.pending import settle
from ringkv_node.model.records import is_live_raw

__all__ = ["endpoint", "routes"]

VERSION_HEADER = "X-Ringkv-Version"
EPOCH_HEADER = "X-Ringkv-Epoch"
EXPIRES_HEADER = "X-Ringkv-Expires"


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
                    check_auth(
                        request.headers.get("Authorization"),
                        scope or _auth_scope(request.path),
                        token,
                        data_auth,
                    )
                resp = await handler(request)
            except web.HTTPException as exc:
                resp = error_response(_from_http_exception(exc, request))
            except Exception as exc:
                resp = error_response(api_error(exc, f"{request.method} {request.path}"))
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


def _path(request: web.Request) -> str:
    return request.raw_path.partition("?")[0]


def _response(reply: dataplane.Reply) -> web.Response:
    headers = {} if reply.version is None else {VERSION_HEADER: reply.version}
    if reply.expires:
        headers[EXPIRES_HEADER] = str(reply.expires)
    return web.Response(
        body=reply.body, status=reply.status, content_type=reply.content_type, headers=headers
    )


async def get_key(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    answer = dataplane.get_key(node, _path(request), _query(request))
    return _response(await settle(answer))


async def put_key(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    length = request.content_length
    too_large = None if length is None else dataplane.value_too_large(length, node)
    if too_large is not None:
        raise too_large
    body = await read_body(request)
    answer = dataplane.put_key(node, _path(request), _query(request), body)
    return _response(await settle(answer))


async def delete_key(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    answer = dataplane.delete_key(node, _path(request), _query(request))
    return _response(await settle(answer))


async def list_keys(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    limits = kv_limits(request)
    query = request.query
    prefix_text = query.get("prefix", "")
    prefix = key_or_error(prefix_text, limits) if prefix_text else b""
    after_text = query.get("start_after")
    start_after = key_or_error(after_text, limits) if after_text else None
    limit = parsing.parse_limit(query.get("limit"))
    deleted = parsing.parse_bool(query.get("deleted"), "deleted")
    keys, nxt = await node.list_keys(prefix, start_after, limit, deleted=deleted)
    # "replace": a key no API takes (a peer's, from before keys were checked
    # there) must not make the listing fail for everyone
    return json_response(
        {
            "keys": [k.decode("utf-8", "replace") for k in keys],
            "next": None if nxt is None else nxt.decode("utf-8", "replace"),
        }
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
    body = await read_body(request)
    binary = request.content_type == parsing.MSGPACK
    req = parsing.parse_batch(
        body, request.content_type, limits, request.query, now_ms=kv.clock_ms()
    )
    level = req.consistency or node.settings.write_consistency
    if req.atomic:
        _check_single_partition(node.ring, [op.key for op in req.ops])
        stamped = [(op.key, kv.stamp_op(op)) for op in req.ops]
        previous = await node.coordinator.write_atomic(stamped, level)
        packed = [None if p is None else records.encode(p) for p in previous]
        stamps = [rec.version.ts for _, rec in stamped]
    else:  # one call per replica for the whole batch (`bulk`)
        items, stamps = kv.stamp_packed(req.ops)
        packed = await write_bulk(node.coordinator, items, level, max(stamps))
    now = kv.clock_ms()
    suffix = "@" + node.settings.node_id
    out: list[dict[str, Any]] = []
    add = out.append
    for op, ts, prev in zip(req.ops, stamps, packed, strict=True):
        if prev is None or not is_live_raw(prev, now):  # nothing there (a bulk load: every key)
            add(
                {
                    "version": f"{ts}{suffix}",
                    "status": 201 if op.op == "put" else 404,
                    "previous": None,
                }
            )
            continue
        value = records.decode(prev).value
        add(
            {
                "version": f"{ts}{suffix}",
                "status": 200,
                "previous": value if binary else parsing.b64(value),
            }
        )
    doc = {"results": out, "atomic": req.atomic}
    if binary:
        return web.Response(body=wire.dumps(doc), content_type=parsing.MSGPACK)
    return json_response(doc)


def _check_single_partition(ring: Ring, keys: Sequence[bytes]) -> None:
    parts = {ring.partition_of(k) for k in keys}
    if len(parts) > 1:
        raise ApiError.bad_request(
            "atomic batch keys must share one partition: give them a common hash tag, "
            "e.g. user:{42}:name and user:{42}:email",
            "not_single_partition",
        )


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
        (f"/internal/v1/{name}", "always", {"POST": handler})
        for name, handler in INTERNAL_ROUTES.items()
    ],
    *[(path, "always", handlers) for path, handlers in (*ADMIN_ROUTES, *BACKUP_ROUTES)],
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
