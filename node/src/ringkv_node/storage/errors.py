"""How storage fails: the whole batch (`StorageError`, `StorageFullError`), or one
operation that declined (`OpRefusedError`)."""

from __future__ import annotations

__all__ = ["OpRefusedError", "StorageError", "StorageFullError"]


class StorageError(RuntimeError):
    """The storage engine failed; the writes of the batch were not applied."""


class StorageFullError(StorageError):
    """The LMDB map is full (raise --map-size); the write was not applied."""


class OpRefusedError(Exception):
    """An operation declined to write; raised before it touched the transaction."""
