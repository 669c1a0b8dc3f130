"""API errors: every refusal is a status, a stable code and a human message.

Handlers raise `ApiError`; the HTTP layer turns it into
`{"error": code, "message": text}` with the status. Codes are part of the
contract (docs/design.md §3): clients decode them into their exception tree.
"""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """A request the node refuses, with the HTTP status to answer."""

    def __init__(
        self, status: int, code: str, message: str, extra: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, **self.extra}

    @classmethod
    def bad_request(cls, message: str, code: str = "bad_request") -> ApiError:
        return cls(400, code, message)

    @classmethod
    def not_found(cls, message: str = "key not found") -> ApiError:
        return cls(404, "not_found", message)

    @classmethod
    def too_large(cls, message: str) -> ApiError:
        return cls(413, "too_large", message)
