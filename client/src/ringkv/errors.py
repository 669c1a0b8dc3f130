"""The exception tree of the ringkv client.

    RingkvError
    ├── TransportError            no answer: connection refused/reset, DNS
    │   └── TimeoutError          no answer in time
    ├── NoRingError               no seed answered with a ring
    ├── BackupError               backup and restore (`ringkv.backup`)
    │   ├── BackupNotFoundError   no such backup at the destination
    │   ├── InvalidBackupError    also a ValueError: a backup that does not verify
    │   ├── DestinationError      the destination could not be read or written
    │   └── BackupFailedError     the cluster could not be read or written whole
    └── ResponseError             a node answered with an error (.status, .code)
        ├── BadRequestError       400/413: bad key, value too large, bad query...
        │   └── InvalidRequestError   refused before sending, as the node would refuse it
        │       ├── InvalidKeyError       also a ValueError: empty, too long, not UTF-8...
        │       ├── InvalidArgumentError  also a ValueError: value too large, bad level/ttl/batch
        │       └── ValueTypeError        also a TypeError: a value neither bytes nor str
        ├── AuthError             401/403: missing or wrong token
        ├── NotFoundError         404 where absence is an error (never for get/delete)
        ├── ConflictError         409: stale ring epoch, conflicting admin call
        ├── NotEnoughReplicasError 503 not_enough_replicas (.needed, .answered)
        ├── UnavailableError      other 5xx: node starting, shutting down, storage error
        └── StorageFullError      507: the node's storage is full

Every error says what happened in words; `ResponseError` also carries the
node's JSON error code and message. The client checks keys, values and
arguments with the node's rules before sending; what fails is an
`InvalidRequestError` with the status and code the node would answer, and
also a `ValueError` or `TypeError` as Python code expects (httpx's
`InvalidURL` is likewise both its own and a builtin kind).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "BackupError",
    "BackupFailedError",
    "BackupNotFoundError",
    "BadRequestError",
    "ConflictError",
    "DestinationError",
    "InvalidArgumentError",
    "InvalidBackupError",
    "InvalidKeyError",
    "InvalidRequestError",
    "NoRingError",
    "NotEnoughReplicasError",
    "NotFoundError",
    "ResponseError",
    "RingkvError",
    "StorageFullError",
    "TimeoutError",
    "TransportError",
    "UnavailableError",
    "ValueTypeError",
    "error_for",
]


class RingkvError(Exception):
    """Base of every error the ringkv client raises."""


class TransportError(RingkvError):
    """The request got no answer (connection refused or reset, DNS failure)."""


class TimeoutError(TransportError):
    """The request got no answer in time."""


class NoRingError(RingkvError):
    """None of the seed URLs answered with a ring."""


class BackupError(RingkvError):
    """A backup or restore failed (`ringkv.backup`, `ringkv.stores`)."""


class BackupNotFoundError(BackupError):
    """No such backup (or object of one) at the destination."""


class InvalidBackupError(BackupError, ValueError):
    """A backup that does not verify: a bad manifest, or a part that is missing,
    corrupt, truncated or not what the manifest says."""


class DestinationError(BackupError):
    """The backup destination (directory, S3) could not be read or written."""


class BackupFailedError(BackupError):
    """The cluster could not be backed up or restored whole: too few owners of a
    partition answered, the ring changed under the backup, writes failed."""


class ResponseError(RingkvError):
    """A node answered with an error status."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class BadRequestError(ResponseError):
    pass


class InvalidRequestError(BadRequestError):
    """Refused by the client before sending: the node would answer `status`/`code`."""

    def __init__(self, message: str, *, status: int = 400, code: str = "bad_request") -> None:
        super().__init__(status, code, message, {"error": code, "message": message})
        self.args = (message,)

    def __str__(self) -> str:
        return self.message


class InvalidKeyError(InvalidRequestError, ValueError):
    """The key is empty, too long, not UTF-8, or holds a forbidden character."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_key") -> None:
        super().__init__(message, status=status, code=code)


class InvalidArgumentError(InvalidRequestError, ValueError):
    """A value over the limit, a bad consistency level or ttl, a malformed batch."""


class ValueTypeError(InvalidRequestError, TypeError):
    """A value that is neither bytes nor str."""


class AuthError(ResponseError):
    pass


class NotFoundError(ResponseError):
    pass


class ConflictError(ResponseError):
    pass


class NotEnoughReplicasError(ResponseError):
    @property
    def needed(self) -> int | None:
        value = self.body.get("needed")
        return value if isinstance(value, int) else None

    @property
    def answered(self) -> int | None:
        value = self.body.get("answered")
        return value if isinstance(value, int) else None


class UnavailableError(ResponseError):
    pass


class StorageFullError(ResponseError):
    pass


def error_for(status: int, body: dict[str, Any]) -> ResponseError:
    """The exception for an error answer (`body` is the node's JSON error)."""
    code = str(body.get("error", "unknown"))
    message = str(body.get("message", ""))
    cls: type[ResponseError]
    if code == "not_enough_replicas":
        cls = NotEnoughReplicasError
    elif status in (400, 405, 413):
        cls = BadRequestError
    elif status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = ConflictError
    elif status == 507:
        cls = StorageFullError
    else:
        cls = UnavailableError
    return cls(status, code, message, body)
