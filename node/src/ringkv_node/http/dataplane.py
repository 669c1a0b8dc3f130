"""The key routes without a web framework: request parts in, a `Reply` out.

`GET/PUT/DELETE /v1/kv/{key}` are answered by two shells: the fast lane
(`frontdoor`, most traffic) and aiohttp (`api`, connections the fast lane
hands over). Both call these functions, so a key route means the same thing
on either, and both turn exceptions into the same JSON errors through
`api_error`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Callable, Mapping
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from aiohttp.web_protocol import RequestPayloadError

from ringkv.versions import ClockAheadError
from ringkv_node.cluster import MembershipError, Node, NotEnoughReplicasError
from ringkv_node.errors import ApiError
from ringkv_node.http import parsing
from ringkv_node.model.pending import Pending
from ringkv_node.model.records import Record, is_live
from ringkv_node.storage import ClosedError, KeyTooLongError, StorageError, StorageFullError

__all__ = [
    "KV_PREFIX",
    "OCTETS",
    "Answer",
    "Reply",
    "api_error",
    "check_auth",
    "delete_key",
    "get_key",
    "key_from_path",
    "put_key",
    "value_too_large",
]

log = logging.getLogger("ringkv.dataplane")

KV_PREFIX = "/v1/kv/"
OCTETS = "application/octet-stream"


class Reply(NamedTuple):
    status: int
    body: bytes = b""
    content_type: str | None = None
    version: str | None = None  # X-Ringkv-Version
    expires: int = 0  # X-Ringkv-Expires (unix ms) when not 0


# What a key route returns: the reply now, or a future's (a write, or a read
# other owners answer).
Answer = Reply | Pending[Reply]


def key_from_path(path: str, node: Node) -> bytes:
    """The key from a raw `/v1/kv/...` path, percent-decoded to bytes and validated.

    Decoded from the raw path, not a framework's decoded one: an invalid
    UTF-8 escape such as `%FF` must be refused, not silently renamed.
    """
    raw = path[len(KV_PREFIX) :]
    key = unquote_to_bytes(raw) if "%" in raw else raw.encode()
    return parsing.key_or_error(key, node.settings.limits)


def _level(query: Mapping[str, str], default: str) -> str:
    return parsing.parse_consistency(query.get("consistency")) or default


def get_key(node: Node, path: str, query: Mapping[str, str]) -> Answer:
    """The reply, or (when other owners must answer) the read to wait for."""
    key = key_from_path(path, node)
    now = node.coordinator.read_now(key, _level(query, node.settings.read_consistency))
    if isinstance(now, asyncio.Future):
        return Pending(now, functools.partial(_found, node))
    return _found(node, now)


def _found(node: Node, rec: Record | None) -> Reply:
    if rec is None or not is_live(rec, node.kv.clock_ms()):
        raise ApiError.not_found()
    return Reply(200, rec.value, OCTETS, str(rec.version), rec.expires_ms)


def value_too_large(length: int, node: Node) -> ApiError | None:
    limit = node.settings.limits.max_value_bytes
    if length > limit:
        return ApiError.too_large(f"value is {length} bytes; the limit is {limit}")
    return None


def put_key(node: Node, path: str, query: Mapping[str, str], body: bytes) -> Answer:
    kv = node.kv
    key = key_from_path(path, node)
    level = _level(query, node.settings.write_consistency)
    ttl, expires = parsing.parse_expiry(query.get("ttl"), query.get("expires"), kv.clock_ms())
    too_large = value_too_large(len(body), node)
    if too_large is not None:
        raise too_large
    rec = kv.stamp(body, ttl, expires_ms=expires)
    return _written(node, rec, node.coordinator.write_now(key, rec, level), _put_reply)


def _put_reply(node: Node, rec: Record, prev: Record | None) -> Reply:
    if prev is not None and is_live(prev, node.kv.clock_ms()):
        return Reply(200, prev.value, OCTETS, str(rec.version))
    return Reply(201, b"", None, str(rec.version))


def delete_key(node: Node, path: str, query: Mapping[str, str]) -> Answer:
    kv = node.kv
    key = key_from_path(path, node)
    level = _level(query, node.settings.write_consistency)
    rec = kv.stamp(b"", None, tombstone=True)
    return _written(node, rec, node.coordinator.write_now(key, rec, level), _delete_reply)


def _delete_reply(node: Node, rec: Record, prev: Record | None) -> Reply:
    if prev is None or not is_live(prev, node.kv.clock_ms()):
        raise ApiError.not_found()
    return Reply(200, prev.value, OCTETS, str(rec.version))


_WriteReply = Callable[[Node, Record, Record | None], Reply]


def _written(
    node: Node, rec: Record, write: asyncio.Future[Record | None], reply: _WriteReply
) -> Answer:
    return Pending(write, functools.partial(reply, node, rec))


def api_error(exc: Exception, what: str) -> ApiError:
    """The JSON error a request that raised `exc` answers with (`what`: for the log)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, MembershipError):
        return ApiError(409, exc.code, str(exc))
    if isinstance(exc, StorageFullError):
        return ApiError(507, "storage_full", str(exc))
    if isinstance(exc, ConnectionResetError):  # the client went while its body was read
        log.info("%s: the client went away: %s", what, exc)
        return ApiError.bad_request("the connection was lost while the request was read")
    if isinstance(exc, RequestPayloadError):  # a body aiohttp could not read or decode
        return ApiError.bad_request(f"the request body could not be read: {exc}")
    if isinstance(exc, KeyTooLongError):
        return ApiError(413, "key_too_large", str(exc))
    if isinstance(exc, ClockAheadError):
        return ApiError.bad_request(str(exc))
    if isinstance(exc, NotEnoughReplicasError):
        extra: dict[str, object] = {"needed": exc.needed, "answered": exc.answered}
        return ApiError(503, "not_enough_replicas", str(exc), extra)
    if isinstance(exc, StorageError | ClosedError):
        return ApiError(503, "unavailable", str(exc))
    log.error("unhandled error on %s", what, exc_info=exc)
    return ApiError(500, "internal", "internal error; see the log")


def check_auth(authorization: str | None, scope: str, token: str | None, data_auth: bool) -> None:
    """Refuse a request its scope (`open`, `data`, `always`) does not let in."""
    if scope == "open" or (scope == "data" and (token is None or not data_auth)):
        return
    if token is None:
        raise ApiError(403, "forbidden", "admin and internal routes need the node to have --token")
    header = authorization or ""
    if not header.startswith("Bearer "):
        raise ApiError(401, "unauthorized", "missing Authorization: Bearer <token>")
    # surrogateescape: aiohttp decodes header bytes that are not UTF-8 so
    if not hmac.compare_digest(header[7:].encode("utf-8", "surrogateescape"), token.encode()):
        raise ApiError(403, "forbidden", "wrong token")
