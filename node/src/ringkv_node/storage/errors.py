"""How storage fails: the whole batch (`StorageError`, `StorageFullError`), or one
operation that declined (`OpRefusedError`)."""

from __future__ import annotations

__all__ = ["KeyTooLongError", "OpRefusedError", "StorageError", "StorageFullError"]


class StorageError(RuntimeError):
    """The storage engine failed; the writes of the batch were not applied."""


class StorageFullError(StorageError):
    """The LMDB map is full (raise --map-size); the write was not applied."""


class KeyTooLongError(StorageError):
    """A key longer than LMDB takes (511 bytes with what the node adds): that
    write alone was not applied. The API's key limit (`keys.MAX_KEY_BYTES`)
    keeps such keys out; this is the storage's own line."""


class OpRefusedError(Exception):
    """An operation declined to write; raised before it touched the transaction."""
