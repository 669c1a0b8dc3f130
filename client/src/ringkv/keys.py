"""Keys and size limits: the rules every part of ringkv checks the same way.

The node enforces these limits on every request and the client checks them
before sending, so a bad key is refused with the same message wherever it is
caught. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ringkv.errors import InvalidKeyError

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_KEY_BYTES",
    "STORABLE",
    "InvalidKeyError",
    "Limits",
    "check_keys",
    "encode_key",
]

# The longest key a node can store: LMDB's keys are at most 511 bytes, and the
# longest LMDB key the node makes of a key is a hint's (the target's member
# id, up to 63 bytes, a NUL and an 8-byte timestamp before it): 511 - 72.
MAX_KEY_BYTES = 439


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits of DESIGN §3; every one is configurable on the node."""

    max_key_bytes: int = 400
    max_value_bytes: int = 4 * 1024 * 1024
    max_batch_ops: int = 10_000  # was 1000: design §7.13 (a bulk write costs less a key)
    max_batch_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_key_bytes", "max_value_bytes", "max_batch_ops", "max_batch_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_LIMITS = Limits()


def encode_key(key: str | bytes, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Return the key's UTF-8 bytes, or raise InvalidKeyError saying why not.

    A key is 1..max_key_bytes bytes of UTF-8 without NUL or other C0 control
    characters (they break listings, logs and URLs, and no user means them).
    """
    if isinstance(key, bytes):
        raw = key
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidKeyError(f"key is not valid UTF-8 (byte {exc.start})") from None
    elif isinstance(key, str):
        text = key
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidKeyError("key is not valid UTF-8 (lone surrogate)") from None
    else:
        raise InvalidKeyError(f"key must be str or bytes, not {type(key).__name__}")
    if not raw:
        raise InvalidKeyError("key is empty")
    if len(raw) > limits.max_key_bytes:
        raise InvalidKeyError(
            f"key is {len(raw)} bytes; the limit is {limits.max_key_bytes} bytes of UTF-8",
            status=413,
            code="key_too_large",
        )
    if not text.isprintable() and any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise InvalidKeyError("key holds a control character")
    return raw


# Any key a node may already hold: LMDB's 511 bytes less the data key's
# 2-byte partition. Peers' replica batches are checked against this, not the
# API's limit, so that keys stored before a lower limit still move between
# nodes (rebalance, repair).
STORABLE = Limits(max_key_bytes=509)


def check_keys(keys: Sequence[bytes], limits: Limits = DEFAULT_LIMITS) -> None:
    """`encode_key` of every key, raising its InvalidKeyError for the first one
    it refuses: in a few C calls when every key is plain printable UTF-8 of
    an allowed length (the bulk paths: a batch's keys joined by spaces, since
    a multi-byte sequence cannot span an ASCII space), else key by key."""
    if keys and min(map(len, keys)) > 0 and max(map(len, keys)) <= limits.max_key_bytes:
        try:
            if b" ".join(keys).decode("utf-8").isprintable():
                return
        except UnicodeDecodeError:
            pass
    for key in keys:
        encode_key(key, limits)
