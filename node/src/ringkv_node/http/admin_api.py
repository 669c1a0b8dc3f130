"""`/admin/v1/...`: membership change, driven by the operator or `ringkv local`.

JSON bodies, the cluster token always. Every call is idempotent: repeating it
is harmless, and a stale epoch is refused with 409 (docs/design.md §7.6).

    POST /admin/v1/ring/join     a ring with epoch + 1   -> {"state": "joining"}
    POST /admin/v1/ring/stream   {"epoch": E}            -> start copying gained partitions
    GET  /admin/v1/rebalance                             -> progress of this node
    POST /admin/v1/ring/commit   {"epoch": E}            -> {"state": "committed"}
    POST /admin/v1/ring/abort    {"epoch": E}            -> {"state": "aborted"}
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ringkv.ring import Ring
from ringkv_node.errors import ApiError
from ringkv_node.http.appkeys import NODE_KEY
from ringkv_node.http.responses import Handler, json_response, read_doc

__all__ = ["ADMIN_ROUTES"]


def url_problem(url: str) -> str | None:
    """Why a member's URL is not one a node can call (None: it is)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        return f"does not parse ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not http(s)://host[:port]"
    return None


async def _body(request: web.Request) -> Any:
    return await read_doc(request, json.loads, "body is not valid JSON")


async def _epoch(request: web.Request) -> int:
    doc = await _body(request)
    epoch = doc.get("epoch") if isinstance(doc, dict) else None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise ApiError.bad_request('expected {"epoch": <ring epoch>}')
    return epoch


async def join(request: web.Request) -> web.StreamResponse:
    try:
        ring = Ring.from_dict(await _body(request))
    except ValueError as exc:
        raise ApiError.bad_request(f"ring: {exc}") from None
    for member in ring.members:  # peers are called at these (a bad one failed every second)
        why = url_problem(member.url)
        if why is not None:
            raise ApiError.bad_request(f"ring: member {member.id!r}: url {member.url!r} {why}")
    state = await request.app[NODE_KEY].membership.join(ring)
    return json_response({"state": state, "epoch": ring.epoch})


async def stream(request: web.Request) -> web.StreamResponse:
    membership = request.app[NODE_KEY].membership
    await membership.stream(await _epoch(request))
    return json_response(membership.progress())


async def progress(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[NODE_KEY].membership.progress())


async def commit(request: web.Request) -> web.StreamResponse:
    epoch = await _epoch(request)
    return json_response(
        {"state": await request.app[NODE_KEY].membership.commit(epoch), "epoch": epoch}
    )


async def abort(request: web.Request) -> web.StreamResponse:
    epoch = await _epoch(request)
    return json_response(
        {"state": await request.app[NODE_KEY].membership.abort(epoch), "epoch": epoch}
    )


ADMIN_ROUTES: list[tuple[str, dict[str, Handler]]] = [
    ("/admin/v1/ring/join", {"POST": join}),
    ("/admin/v1/ring/stream", {"POST": stream}),
    ("/admin/v1/ring/commit", {"POST": commit}),
    ("/admin/v1/ring/abort", {"POST": abort}),
    ("/admin/v1/rebalance", {"GET": progress}),
]
