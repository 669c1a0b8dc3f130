"""Request parsing for HTTP API v1: query values and batch bodies, checked.

Pure functions from what arrived (strings, bytes) to typed values, raising
`ApiError` (400/413) with a message that says what to fix. Handlers call these
first, so everything past them can trust its input.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from ringkv.digits import is_digits
from ringkv.keys import InvalidKeyError, Limits, encode_key
from ringkv_node.errors import ApiError
from ringkv_node.model.ops import BatchOp

__all__ = [
    "CONSISTENCY_LEVELS",
    "BatchOp",
    "BatchRequest",
    "key_or_error",
    "parse_batch",
    "parse_consistency",
    "parse_expiry",
    "parse_limit",
    "parse_ttl",
]

CONSISTENCY_LEVELS = ("one", "quorum", "all")
MAX_TTL_S = 10 * 365 * 86400
# An absolute expiry below this (March 1973, in ms) is taken for seconds, a
# unit mistake that would store the key already expired: refused.
MIN_EXPIRES_MS = 10**11
MAX_LIST_LIMIT = 10_000
DEFAULT_LIST_LIMIT = 1000
MSGPACK = "application/msgpack"


@dataclass(frozen=True, slots=True)
class BatchRequest:
    ops: tuple[BatchOp, ...]
    atomic: bool
    consistency: str | None


def key_or_error(key: str | bytes, limits: Limits) -> bytes:
    try:
        return encode_key(key, limits)
    except InvalidKeyError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


def parse_consistency(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in CONSISTENCY_LEVELS:
        raise ApiError.bad_request(f"consistency must be one of one, quorum, all; got {value!r}")
    return value


def parse_ttl(value: str | int | None) -> int | None:
    """TTL in whole seconds, 1 .. 10 years; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and is_digits(value))
    ):
        raise ApiError.bad_request(f"ttl must be a whole number of seconds; got {value!r}")
    ttl = int(value)
    if not 1 <= ttl <= MAX_TTL_S:
        raise ApiError.bad_request(f"ttl must be between 1 and {MAX_TTL_S} seconds; got {ttl}")
    return ttl


def parse_expiry(
    ttl: str | int | None, expires: str | int | None, now_ms: int | None
) -> tuple[int | None, int | None]:
    """`(ttl_s, expires_ms)` from a relative `ttl` or an absolute `expires` (unix
    ms, at most 10 years ahead of `now_ms`; None: no upper bound checked).

    An expiry already past is taken: the key is stored expired and reads as
    absent, as Redis does with a past PXAT; a dump loaded late must not fail.
    """
    ttl_s = parse_ttl(ttl)
    if expires is None:
        return ttl_s, None
    if ttl_s is not None:
        raise ApiError.bad_request("ttl and expires: give one, not both")
    if isinstance(expires, bool) or not (
        isinstance(expires, int) or (isinstance(expires, str) and is_digits(expires))
    ):
        raise ApiError.bad_request(f"expires must be unix time in milliseconds; got {expires!r}")
    expires_ms = int(expires)
    if expires_ms < MIN_EXPIRES_MS:
        raise ApiError.bad_request(
            f"expires must be unix time in milliseconds; {expires_ms} looks like seconds"
        )
    if now_ms is not None and expires_ms > now_ms + MAX_TTL_S * 1000:
        raise ApiError.bad_request("expires must be at most 10 years from now")
    return None, expires_ms


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIST_LIMIT
    if not is_digits(value) or not 1 <= int(value) <= MAX_LIST_LIMIT:
        raise ApiError.bad_request(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
    return int(value)


def parse_bool(value: str | None, name: str) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise ApiError.bad_request(f"{name} must be true or false; got {value!r}")


def parse_batch(
    body: bytes,
    content_type: str,
    limits: Limits,
    query: Mapping[str, str],
    *,
    now_ms: int | None = None,
) -> BatchRequest:
    """Decode a JSON (base64 values) or msgpack (raw values) batch body.

    Shape: `{"ops": [{"op": "put", "key": k, "value": v, "ttl": s}, {"op": "delete",
    "key": k}], "atomic": bool, "consistency": level}` (a put may give
    `"expires": unix ms` instead of `ttl`); `atomic` and `consistency` may
    also come as query parameters.
    """
    if len(body) > limits.max_batch_bytes:
        raise ApiError.too_large(
            f"batch body is {len(body)} bytes; the limit is {limits.max_batch_bytes}"
        )
    binary = content_type == MSGPACK
    doc: Any
    try:
        doc = msgpack.unpackb(body, raw=False, strict_map_key=True) if binary else json.loads(body)
    except (
        ValueError,
        RecursionError,  # JSON nested deeper than Python recurses
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        kind = "msgpack" if binary else "JSON"
        raise ApiError.bad_request(f"batch body is not valid {kind}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ops"), list):
        raise ApiError.bad_request('batch body must be an object with an "ops" list')
    raw_ops: list[Any] = doc["ops"]
    if not raw_ops:
        raise ApiError.bad_request("batch has no ops")
    if len(raw_ops) > limits.max_batch_ops:
        raise ApiError.too_large(
            f"batch has {len(raw_ops)} ops; the limit is {limits.max_batch_ops}"
        )
    ops = _parse_ops(raw_ops, binary, limits, now_ms)
    atomic_raw = doc.get("atomic", query.get("atomic"))
    if isinstance(atomic_raw, bool):
        atomic = atomic_raw
    elif atomic_raw is None or isinstance(atomic_raw, str):
        atomic = parse_bool(atomic_raw, "atomic")
    else:
        raise ApiError.bad_request("atomic must be true or false")
    consistency_raw = doc.get("consistency", query.get("consistency"))
    if consistency_raw is not None and not isinstance(consistency_raw, str):
        raise ApiError.bad_request("consistency must be a string")
    return BatchRequest(ops, atomic, parse_consistency(consistency_raw))


_new_op = tuple.__new__  # a BatchOp without its Python-level __new__


def _parse_ops(
    raw_ops: list[Any], binary: bool, limits: Limits, now_ms: int | None
) -> tuple[BatchOp, ...]:
    """Every op of a batch. A msgpack put of a printable text key and a bytes
    value, without expiry (what `put_many` sends), is checked here in a few
    steps; anything else, and any op that fails these checks, goes through
    `_parse_op`, which says exactly what is wrong."""
    max_key, max_value = limits.max_key_bytes, limits.max_value_bytes
    ops: list[BatchOp] = []
    add = ops.append
    for i, item in enumerate(raw_ops):
        if binary and type(item) is dict and len(item) == 3:
            key_raw, value = item.get("key"), item.get("value")
            if (
                type(key_raw) is str
                and type(value) is bytes
                and item.get("op") == "put"
                and len(value) <= max_value
                and key_raw.isprintable()
            ):
                key = key_raw.encode("utf-8")  # msgpack gave valid text: no surrogates
                if 0 < len(key) <= max_key:
                    add(_new_op(BatchOp, ("put", key, value, None, None)))
                    continue
        add(_parse_op(i, item, binary, limits, now_ms))
    return tuple(ops)


def _parse_op(i: int, item: Any, binary: bool, limits: Limits, now_ms: int | None) -> BatchOp:
    where = f"ops[{i}]"
    if not isinstance(item, dict):
        raise ApiError.bad_request(f"{where} must be an object")
    kind = item.get("op")
    if kind not in ("put", "delete"):
        raise ApiError.bad_request(f'{where}.op must be "put" or "delete"')
    key_raw = item.get("key")
    if not isinstance(key_raw, (str, bytes)):
        raise ApiError.bad_request(f"{where}.key must be a string", "invalid_key")
    try:
        key = encode_key(key_raw, limits)
    except InvalidKeyError as exc:
        raise ApiError.bad_request(f"{where}.key: {exc}", "invalid_key") from None
    if kind == "delete":
        return BatchOp("delete", key)
    value_raw = item.get("value")
    if binary and isinstance(value_raw, bytes):
        value = value_raw
    elif isinstance(value_raw, str):
        try:
            value = value_raw.encode() if binary else base64.b64decode(value_raw, validate=True)
        except ValueError:  # binascii.Error, or a character that is not ASCII
            raise ApiError.bad_request(f"{where}.value is not valid base64") from None
    else:
        need = "bytes" if binary else "a base64 string"
        raise ApiError.bad_request(f"{where}.value must be {need}")
    if len(value) > limits.max_value_bytes:
        raise ApiError.too_large(
            f"{where}.value is {len(value)} bytes; the limit is {limits.max_value_bytes}"
        )
    try:
        ttl, expires_ms = parse_expiry(item.get("ttl"), item.get("expires"), now_ms)
    except ApiError as exc:
        raise ApiError.bad_request(f"{where}.{exc.message}") from None
    return BatchOp("put", key, value, ttl, expires_ms)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
