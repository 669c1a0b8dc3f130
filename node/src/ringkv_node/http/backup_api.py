"""`/admin/v1/snapshot/{partition}` and `/admin/v1/apply`: what backup and restore use.

Both need the cluster token (admin routes always do, design §3).

    GET  /admin/v1/snapshot?epoch=E   -> `{"epoch": E, "digests": {"p": digest}}`:
         the `X-Ringkv-Digest` of every partition this node owns, now (a
         backup asks each node once instead of a `HEAD` per partition);
         409 `stale_epoch` as below.
    GET  /admin/v1/snapshot/{partition}?epoch=E   this replica's records of one
         partition from one read transaction, streamed as frames (`snapshot`),
         with `X-Ringkv-Digest`: a fingerprint of them (two replicas with the
         same one hold the same keys at the same versions, and a backup reads
         only one of them);
         409 `stale_epoch` when the node's ring is not epoch E (the ring changed
         under the backup, or this node has yet to commit or hear of it), 409
         `not_owner` when it does not own the partition; both say the node's
         epoch (`"epoch"`), and the backup reads the partition again at a newer
         ring (`ringkv._backupretry`).
    POST /admin/v1/apply   msgpack `{"records": [[key, record], ...], "consistency": level}`
         -> `{"records": n, "kept": k}`: packed records written through this
         node to their owners last-writer-wins with the versions and expiry they
         carry (`bulk`); `kept` counts those the cluster already held at that
         version or a newer one.
         With `"replica": E` instead of a consistency, the records are this
         node's own (a restore that sends each batch to every owner itself):
         written here alone, last-writer-wins; 409 `stale_epoch` unless the
         ring is at epoch E with no change under way, 409 `not_owner` unless
         this node owns every record's partition. `kept` counts those this
         replica already held at that version or a newer one.
"""

from __future__ import annotations

import logging

from aiohttp import web

from ringkv.digits import is_digits
from ringkv.keys import InvalidKeyError, check_keys
from ringkv_node.cluster import RingState
from ringkv_node.cluster.bulk import write_bulk
from ringkv_node.errors import ApiError
from ringkv_node.http.appkeys import NODE_KEY
from ringkv_node.http.parsing import parse_consistency
from ringkv_node.http.responses import Handler, json_response, read_doc
from ringkv_node.model import records, wire
from ringkv_node.replica.snapshot import CONTENT_TYPE, FRAME_BYTES, stream_partition

__all__ = ["BACKUP_ROUTES", "MAX_APPLY_RECORDS"]

log = logging.getLogger("ringkv.backup")

MAX_APPLY_RECORDS = 10_000


def _partition(request: web.Request, partitions: int) -> int:
    text = request.match_info["partition"]
    if not is_digits(text) or int(text) >= partitions:
        raise ApiError.bad_request(
            f"partition must be a number from 0 to {partitions - 1}, not {text!r}"
        )
    return int(text)


def _epoch_check(request: web.Request) -> None:
    """409 `stale_epoch` unless the request's `epoch` (when given) is the node's."""
    ring = request.app[NODE_KEY].ring
    epoch = request.query.get("epoch")
    if epoch is not None and epoch != str(ring.epoch):
        raise ApiError(
            409,
            "stale_epoch",
            f"the ring is at epoch {ring.epoch} here, not {epoch}",
            {"epoch": ring.epoch},
        )


def _snapshot_checks(request: web.Request) -> int:
    """The partition a snapshot request names, once the epoch and ownership hold."""
    node = request.app[NODE_KEY]
    ring = node.ring
    part = _partition(request, ring.partitions)
    _epoch_check(request)
    me = node.settings.node_id
    if me not in ring.owners(part):
        raise ApiError(
            409,
            "not_owner",
            f"{me} does not own partition {part} in ring epoch {ring.epoch}",
            {"epoch": ring.epoch},
        )
    return part


async def snapshot_digest(request: web.Request) -> web.StreamResponse:
    """HEAD: the checks and the `X-Ringkv-Digest` of a GET now, with no body
    and no transaction held (a backup compares the owners' before reading)."""
    part = _snapshot_checks(request)
    storage = request.app[NODE_KEY].kv.storage
    return web.Response(
        headers={
            "X-Ringkv-Epoch": str(request.app[NODE_KEY].ring.epoch),
            "X-Ringkv-Digest": storage.fingerprint(part),
        }
    )


async def snapshot_digests(request: web.Request) -> web.StreamResponse:
    """GET without a partition: every owned partition's `X-Ringkv-Digest` now."""
    _epoch_check(request)
    node = request.app[NODE_KEY]
    ring = node.ring
    fingerprint = node.kv.storage.fingerprint
    digests = {str(p): fingerprint(p) for p in sorted(ring.partitions_of(node.settings.node_id))}
    return web.json_response({"epoch": ring.epoch, "digests": digests})


async def snapshot(request: web.Request) -> web.StreamResponse:
    part = _snapshot_checks(request)
    node = request.app[NODE_KEY]
    ring = node.ring
    fingerprint, rows = node.kv.storage.snapshot(part, FRAME_BYTES)
    resp = web.StreamResponse(
        headers={
            "Content-Type": CONTENT_TYPE,
            "X-Ringkv-Epoch": str(ring.epoch),
            "X-Ringkv-Digest": fingerprint,
        }
    )
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
    except BaseException:
        rows.close()
        raise
    try:
        await stream_partition(rows, resp.write)
        await resp.write_eof()
    except (ConnectionError, OSError) as exc:  # the reader went away
        log.info("snapshot of partition %d not finished: %s", part, exc)
    except Exception:  # the answer has started: cut it short (no end frame) rather than lie
        log.exception("snapshot of partition %d failed", part)
        if request.transport is not None:
            request.transport.close()
    return resp


async def apply(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    limits = node.settings.limits
    doc = await read_doc(request, wire.loads, "apply: body is not valid msgpack")
    if not isinstance(doc, dict) or "records" not in doc:
        raise ApiError.bad_request('apply: expected {"records": [[key, record], ...]}')
    level_raw = doc.get("consistency")
    if level_raw is not None and not isinstance(level_raw, str):
        raise ApiError.bad_request("apply: consistency must be a string")
    level = parse_consistency(level_raw) or node.settings.write_consistency
    replica = doc.get("replica")
    if replica is not None and (type(replica) is not int or replica < 0):
        raise ApiError.bad_request("apply: replica must be a ring epoch (a whole number)")
    try:
        items, max_ts = wire.packed_records(doc["records"])
    except ValueError as exc:
        raise ApiError.bad_request(f"apply: {exc}") from None
    node.kv.hlc.check_ahead(max_ts)  # before any owner is sent a record
    if len(items) > MAX_APPLY_RECORDS:
        raise ApiError.too_large(f"apply: {len(items)} records; at most {MAX_APPLY_RECORDS} a call")
    largest = limits.max_value_bytes + records.HEADER_SIZE + 255
    try:
        check_keys([key for key, _ in items], limits)
    except InvalidKeyError as exc:
        raise ApiError(exc.status, exc.code, f"apply: {exc.message}") from None
    if items and max(len(raw) for _, raw in items) > largest:
        key, raw = next((k, r) for k, r in items if len(r) > largest)
        raise ApiError.too_large(
            f"apply: the record of {key!r} is {len(raw)} bytes; values are at most "
            f"{limits.max_value_bytes}"
        )
    if not items:
        previous: list[bytes | None] = []
    elif replica is not None:
        _check_replica(node.rings, node.settings.node_id, replica, items)
        previous = await node.kv.enqueue_raw(items, max_ts)
    else:
        previous = await write_bulk(node.coordinator, items, level, max_ts)
    newer = records.newer_raw
    kept = (
        sum(
            1
            for (_, raw), prev in zip(items, previous, strict=True)
            if prev and not newer(raw, prev)
        )
        if any(previous)  # a restore into a new cluster: none was there
        else 0
    )
    return json_response({"records": len(items), "kept": kept})


def _check_replica(rings: RingState, me: str, epoch: int, items: list[tuple[bytes, bytes]]) -> None:
    """A replica apply's guard: the sender's ring is ours, and ours is settled
    (while a change is under way, writes must reach the new owners too:
    the coordinated apply does that), and every record is ours to hold."""
    ring = rings.ring
    if ring.epoch != epoch or rings.pending is not None:
        raise ApiError(
            409,
            "stale_epoch",
            f"the ring is at epoch {ring.epoch}"
            + (" with a change under way" if rings.pending is not None else "")
            + f", not settled at {epoch}: send the records through the coordinated apply",
        )
    mine = ring.partitions_of(me)
    if len(mine) == ring.partitions:  # this node holds every partition (N = nodes)
        return
    part_of = ring.partition_of
    for part in {part_of(key) for key, _ in items}:
        if me not in ring.owners(part):
            raise ApiError(
                409, "not_owner", f"{me} does not own partition {part} in ring epoch {epoch}"
            )


BACKUP_ROUTES: list[tuple[str, dict[str, Handler]]] = [
    ("/admin/v1/snapshot", {"GET": snapshot_digests}),
    ("/admin/v1/snapshot/{partition}", {"GET": snapshot, "HEAD": snapshot_digest}),
    ("/admin/v1/apply", {"POST": apply}),
]
