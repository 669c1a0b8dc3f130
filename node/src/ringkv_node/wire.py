"""Internal wire format between nodes: msgpack with records in their packed form.

Records travel as `records.encode` bytes, so a replica stores exactly what the
coordinator stamped. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from ringkv_node import records
from ringkv_node.records import Record

__all__ = ["decode_records", "dumps", "encode_records", "loads"]

CONTENT_TYPE = "application/msgpack"


def dumps(doc: Any) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]


def loads(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode_records(items: Sequence[tuple[bytes, Record]]) -> list[list[bytes]]:
    return [[key, records.encode(rec)] for key, rec in items]


def decode_records(doc: Any) -> list[tuple[bytes, Record]]:
    if not isinstance(doc, list):
        raise ValueError("expected a list of [key, record]")
    out = []
    for item in doc:
        if not (isinstance(item, list) and len(item) == 2):
            raise ValueError("expected [key, record] pairs")
        key, raw = item
        if not isinstance(key, bytes) or not isinstance(raw, bytes):
            raise ValueError("key and record must be bytes")
        out.append((key, records.decode(raw)))
    return out


def maybe_record(raw: bytes | None) -> Record | None:
    return None if raw is None else records.decode(raw)


def maybe_bytes(rec: Record | None) -> bytes | None:
    return None if rec is None else records.encode(rec)
