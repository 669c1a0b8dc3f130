"""What every route file shares: the handler type and JSON answers.

One spelling of each, so a route file never grows its own (JSON bodies are
compact: no spaces after separators).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ringkv_node.errors import ApiError
from ringkv_node.http.appkeys import NODE_KEY

__all__ = ["Handler", "error_response", "json_bytes", "json_response", "read_body", "read_doc"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=json_bytes(doc), status=status, content_type="application/json")


def error_response(err: ApiError) -> web.Response:
    return json_response(err.body(), err.status)


async def read_doc(request: web.Request, loads: Callable[[bytes], Any], refusal: str) -> Any:
    """The request's body decoded by `loads` (`json.loads`, `wire.loads`); a body
    it cannot decode is a 400 saying `refusal: why`."""
    body = await read_body(request)
    try:
        return loads(body)
    # TypeError: a msgpack map keyed by an array or a map (unhashable);
    # RecursionError: JSON nested deeper than Python recurses
    except (ValueError, TypeError, RecursionError) as exc:
        raise ApiError.bad_request(f"{refusal}: {exc}") from None


async def read_body(request: web.Request) -> bytes:
    """The request's body, waited for at most the node's `--body-timeout`: a
    body that stops arriving (a client that stalls, or a chunked body that
    aiohttp refused part way and never ends) is a 408, not a handler and a
    connection held until the client goes."""
    timeout_s = request.app[NODE_KEY].settings.body_timeout_s
    try:
        return await asyncio.wait_for(request.read(), timeout_s)
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"the request body did not arrive within {timeout_s:g} s"
        ) from None
