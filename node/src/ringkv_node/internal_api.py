"""`/internal/v1/...`: what nodes ask each other (always behind the cluster token).

Bodies are msgpack (`wire`). Every response carries the node's ring epoch in
`X-Ringkv-Epoch`, which is how a newer ring spreads (gossip by piggyback).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ringkv.ring import Ring
from ringkv_node import wire
from ringkv_node.errors import ApiError
from ringkv_node.state import NODE_KEY

__all__ = ["INTERNAL_ROUTES"]

MAX_SCAN = 10_000


async def _body(request: web.Request) -> Any:
    try:
        return wire.loads(await request.read())
    except ValueError as exc:
        raise ApiError.bad_request(f"internal body is not valid msgpack: {exc}") from None


def _answer(request: web.Request, doc: Any) -> web.Response:
    node = request.app[NODE_KEY]
    peer_epoch = request.headers.get("X-Ringkv-Epoch", "")
    if peer_epoch.isdigit() and int(peer_epoch) > node.ring.epoch:
        node.epoch_seen(_peer_of(request), int(peer_epoch))
    return web.Response(
        body=wire.dumps(doc),
        content_type=wire.CONTENT_TYPE,
        headers={"X-Ringkv-Epoch": str(node.ring.epoch)},
    )


def _peer_of(request: web.Request) -> str:
    return request.headers.get("X-Ringkv-Node", "")


async def replicate(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    try:
        items = wire.decode_records(await _body(request))
    except (ValueError, TypeError) as exc:
        raise ApiError.bad_request(f"replicate: {exc}") from None
    applied = await node.kv.apply_many(items) if items else []
    return _answer(request, [wire.maybe_bytes(a.previous) for a in applied])


async def read(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    keys = await _body(request)
    if not isinstance(keys, list) or not all(isinstance(k, bytes) for k in keys):
        raise ApiError.bad_request("read: expected a list of keys")
    get = node.kv.storage.get
    return _answer(request, [wire.maybe_bytes(get(k)) for k in keys])


async def scan(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    doc = await _body(request)
    try:
        prefix = bytes(doc["prefix"])
        after = doc.get("start_after")
        limit = int(doc["limit"])
    except (KeyError, TypeError, ValueError):
        raise ApiError.bad_request("scan: expected prefix, start_after, limit") from None
    if not 1 <= limit <= MAX_SCAN + 1:
        raise ApiError.bad_request("scan: limit out of range")
    entries, full = node.kv.scan_entries(prefix, None if after is None else bytes(after), limit)
    return _answer(
        request,
        {
            "entries": [[e.key, e.version.ts, e.version.node, e.live] for e in entries],
            "full": full,
        },
    )


async def digests(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    doc = await _body(request)
    wanted = doc.get("partitions") if isinstance(doc, dict) else None
    if not isinstance(wanted, list):
        raise ApiError.bad_request("digests: expected {partitions: [...]}")
    mine = node.kv.storage.bucket_digests()
    return _answer(request, {p: mine[p] for p in wanted if p in mine})


async def bucket(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    doc = await _body(request)
    try:
        part, bkt, after = int(doc["partition"]), int(doc["bucket"]), bytes(doc["after"])
    except (KeyError, TypeError, ValueError):
        raise ApiError.bad_request("bucket: expected partition, bucket, after") from None
    recs = node.kv.storage.partition_records(part, after=after, bucket=bkt, limit=1000)
    return _answer(request, {"records": wire.encode_records(recs), "more": len(recs) >= 1000})


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


INTERNAL_ROUTES: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "replicate": replicate,
    "read": read,
    "scan": scan,
    "digests": digests,
    "bucket": bucket,
    "ping": ping,
    "ring": ring,
    "install-ring": install_ring,
}
