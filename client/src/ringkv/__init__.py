"""ringkv: client, ring math and command line of the ringkv key-value store.

from ringkv import Client, AsyncClient
kv = Client("http://127.0.0.1:7100")
kv.put("k", b"v"); kv.get("k"); kv.delete("k"); kv.keys(prefix="user:")
"""

from ringkv._core import Entry, RetryPolicy
from ringkv.aio import AsyncBatch, AsyncClient
from ringkv.client import Batch, Client
from ringkv.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidRequestError,
    NoRingError,
    NotEnoughReplicasError,
    NotFoundError,
    ResponseError,
    RingkvError,
    StorageFullError,
    TimeoutError,
    TransportError,
    UnavailableError,
    ValueTypeError,
)
from ringkv.keys import DEFAULT_LIMITS, Limits, encode_key
from ringkv.ring import Member, Ring
from ringkv.versions import HLC, Version, parse_version

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_LIMITS",
    "HLC",
    "AsyncBatch",
    "AsyncClient",
    "AuthError",
    "BadRequestError",
    "Batch",
    "Client",
    "ConflictError",
    "Entry",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidRequestError",
    "Limits",
    "Member",
    "NoRingError",
    "NotEnoughReplicasError",
    "NotFoundError",
    "ResponseError",
    "RetryPolicy",
    "Ring",
    "RingkvError",
    "StorageFullError",
    "TimeoutError",
    "TransportError",
    "UnavailableError",
    "ValueTypeError",
    "Version",
    "__version__",
    "encode_key",
    "parse_version",
]
