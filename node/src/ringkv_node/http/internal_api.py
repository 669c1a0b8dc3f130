"""`/internal/v1/...`: what nodes ask each other (always behind the cluster token).

Bodies are msgpack (`wire`); the replica logic is `peer_service.serve`. Every
response carries the node's ring epoch in `X-Ringkv-Epoch`, which is how a
newer ring spreads (gossip by piggyback).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ringkv.digits import is_digits
from ringkv.ring import Ring
from ringkv_node.errors import ApiError
from ringkv_node.http.appkeys import NODE_KEY
from ringkv_node.http.responses import Handler, read_doc
from ringkv_node.model import wire
from ringkv_node.replica.peer_service import PEER_CALLS, serve

__all__ = ["INTERNAL_ROUTES"]


async def _body(request: web.Request) -> Any:
    return await read_doc(request, wire.loads, "internal body is not valid msgpack")


def _answer(request: web.Request, doc: Any) -> web.Response:
    node = request.app[NODE_KEY]
    peer_epoch = request.headers.get("X-Ringkv-Epoch", "")
    peer = request.headers.get("X-Ringkv-Node", "")
    if peer and is_digits(peer_epoch) and int(peer_epoch) > node.ring.epoch:
        node.epoch_seen(peer, int(peer_epoch))
    return web.Response(
        body=wire.dumps(doc),
        content_type=wire.CONTENT_TYPE,
        headers={"X-Ringkv-Epoch": str(node.ring.epoch)},
    )


def _peer_call(name: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        doc = await _body(request)
        try:
            answer = await serve(request.app[NODE_KEY].kv, name, doc)
        except ValueError as exc:
            raise ApiError.bad_request(str(exc)) from None
        return _answer(request, answer)

    handler.__name__ = name
    return handler


async def ping(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    return _answer(request, {"id": node.settings.node_id, "epoch": node.ring.epoch})


async def ring(request: web.Request) -> web.StreamResponse:
    return _answer(request, request.app[NODE_KEY].ring.to_dict())


async def install_ring(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    try:
        new = Ring.from_dict(await _body(request))
    except ValueError as exc:
        raise ApiError.bad_request(f"ring: {exc}") from None
    installed = await node.install_ring(new)
    return _answer(request, {"installed": installed, "epoch": node.ring.epoch})


INTERNAL_ROUTES: dict[str, Handler] = {
    **{name: _peer_call(name) for name in PEER_CALLS},
    "ping": ping,
    "ring": ring,
    "install-ring": install_ring,
}
