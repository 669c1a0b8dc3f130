"""Internal wire format between nodes: msgpack with records in their packed form.

Records travel as `records.encode` bytes, so a replica stores exactly what the
coordinator stamped. On a peer link (`peerlink`) each document is one frame:
a 4-byte big-endian length, then the msgpack bytes. Pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgpack

from ringkv_node.model import records
from ringkv_node.model.records import Record

__all__ = [
    "MAX_FRAME",
    "FrameError",
    "decode_records",
    "dumps",
    "encode_records",
    "frame",
    "loads",
    "packed_records",
    "take_frames",
]

CONTENT_TYPE = "application/msgpack"
MAX_FRAME = 64 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class FrameError(ValueError):
    """A peer link sent something that is not a frame of ours."""


def dumps(doc: Any) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]


def loads(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode_records(items: Sequence[tuple[bytes, Record]]) -> list[list[bytes]]:
    return [[key, records.encode(rec)] for key, rec in items]


def decode_records(doc: Any) -> list[tuple[bytes, Record]]:
    items, _ = packed_records(doc)
    return [(key, records.decode(raw)) for key, raw in items]


def packed_records(doc: Any) -> tuple[list[tuple[bytes, bytes]], int]:
    """`[[key, record], ...]` with the records left packed (headers checked), and
    their newest timestamp. Every record of a batch usually has one writer:
    its member id is checked (UTF-8) once, not once a record."""
    if not isinstance(doc, list):
        raise ValueError("expected a list of [key, record]")
    out: list[tuple[bytes, bytes]] = []
    add = out.append
    max_ts = 0
    unpack = records.HEADER.unpack_from
    start = records.HEADER_SIZE
    writers: set[bytes] = set()
    try:
        for item in doc:
            if type(item) is not list or len(item) != 2:
                raise ValueError("expected [key, record] pairs")
            key, raw = item
            if type(key) is not bytes or type(raw) is not bytes:
                raise ValueError("key and record must be bytes")
            ts, _, _, node_len = unpack(raw)  # shorter than a header: struct.error
            if len(raw) < start + node_len:
                raise ValueError("record shorter than its member id")
            node = raw[start : start + node_len]
            if node not in writers:
                node.decode("utf-8")  # UnicodeDecodeError is a ValueError
                writers.add(node)
            if ts > max_ts:
                max_ts = ts
            add((key, raw))
    except struct.error:
        raise ValueError("record shorter than its header") from None
    return out, max_ts


def maybe_record(raw: bytes | None) -> Record | None:
    return None if raw is None else records.decode(raw)


def frame(doc: Any) -> bytes:
    body = dumps(doc)
    return _LENGTH.pack(len(body)) + body


def take_frames(buf: bytearray) -> list[Any]:
    """Decode and remove every complete frame at the start of `buf`."""
    docs: list[Any] = []
    pos, end = 0, len(buf)
    while end - pos >= 4:
        (length,) = _LENGTH.unpack_from(buf, pos)
        if length > MAX_FRAME:
            raise FrameError(f"frame of {length} bytes; the limit is {MAX_FRAME}")
        if end - pos - 4 < length:
            break
        try:
            docs.append(loads(bytes(buf[pos + 4 : pos + 4 + length])))
        except (ValueError, TypeError) as exc:
            raise FrameError(f"frame is not msgpack: {exc}") from None
        pos += 4 + length
    del buf[:pos]
    return docs
