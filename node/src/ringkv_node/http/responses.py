"""What every route file shares: the handler type and JSON answers.

One spelling of each, so a route file never grows its own (JSON bodies are
compact: no spaces after separators).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ringkv_node.errors import ApiError

__all__ = ["Handler", "error_response", "json_bytes", "json_response", "read_doc"]

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
    body = await request.read()
    try:
        return loads(body)
    # TypeError: a msgpack map keyed by an array or a map (unhashable);
    # RecursionError: JSON nested deeper than Python recurses
    except (ValueError, TypeError, RecursionError) as exc:
        raise ApiError.bad_request(f"{refusal}: {exc}") from None
