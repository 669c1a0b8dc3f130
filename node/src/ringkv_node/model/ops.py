"""A write operation as a request gives it: put or delete one key. Pure data.

The HTTP layer parses batches into these (`http.parsing`); the replica layer
stamps them into records (`KV.stamp_op`, `KV.stamp_packed`).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["BatchOp"]


class BatchOp(NamedTuple):
    """A named tuple: a bulk batch parses a thousand of them a request."""

    op: str  # "put" | "delete"
    key: bytes
    value: bytes = b""
    ttl_s: int | None = None
    expires_ms: int | None = None  # absolute (unix ms); set instead of ttl_s
