"""A strict HTTP/1.1 request parser for the node's fast lane: bytes in, requests out.

The data routes (`/v1/kv/{key}`) carry nearly all of a node's traffic, and
aiohttp's per-request machinery costs more than the whole key lookup. The
fast lane (`frontdoor`) serves those routes itself and hands every other
connection to aiohttp. This parser therefore accepts only the plain, common
shape of a request, and says `UNSUPPORTED` for anything else, so aiohttp,
not this module, decides what a chunked, upgraded, folded or otherwise
unusual request means and how to refuse a malformed one:

- request line `METHOD SP origin-form-target SP HTTP/1.1`;
- header fields `name: value`, each name once, no obsolete line folding;
- a body only by `Content-Length` (no `Transfer-Encoding`, no `Expect`),
  at most `max_body` bytes. (`Upgrade` is the caller's to judge: the fast
  lane takes the peer-link upgrade and hands every other one to aiohttp.)

Pure: no I/O; a caller keeps the buffer and the offset of the next request.
"""

from __future__ import annotations

import time
from typing import Final, NamedTuple

__all__ = [
    "MAX_HEAD_BYTES",
    "UNSUPPORTED",
    "Request",
    "http_date",
    "parse_request",
    "response_head",
]

MAX_HEAD_BYTES: Final = 16384  # the request line and headers; aiohttp's limit too

_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_REFUSED_FIELDS = frozenset({"transfer-encoding", "expect"})


class Request(NamedTuple):
    method: str
    target: str  # the raw request-target, still percent-encoded
    headers: dict[str, str]  # lower-case names
    body: bytes
    keep_alive: bool
    end: int  # offset just past this request in the buffer


class _Unsupported:
    def __repr__(self) -> str:
        return "UNSUPPORTED"


UNSUPPORTED: Final = _Unsupported()


def parse_request(
    buf: bytes | bytearray, start: int, max_body: int
) -> Request | _Unsupported | None:
    """The request beginning at `buf[start:]`, None when incomplete, or UNSUPPORTED."""
    head_end = buf.find(b"\r\n\r\n", start)
    if head_end < 0:
        return UNSUPPORTED if len(buf) - start > MAX_HEAD_BYTES else None
    if head_end - start > MAX_HEAD_BYTES:
        return UNSUPPORTED
    try:
        head = buf[start:head_end].decode("ascii")
    except UnicodeDecodeError:
        return UNSUPPORTED
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or not parts[1].startswith("/"):
        return UNSUPPORTED
    method, target = parts[0], parts[1]
    if not method.isalpha() or not method.isupper() or not target.isprintable():
        return UNSUPPORTED
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name = name.lower()
        if not sep or not name or not _TOKEN_CHARS.issuperset(name.encode()):
            return UNSUPPORTED  # also catches obsolete folding (a leading space)
        if name in headers or name in _REFUSED_FIELDS:
            return UNSUPPORTED
        headers[name] = value.strip(" \t")
    length_text = headers.get("content-length", "0")
    if not (length_text.isdigit() and len(length_text) <= 12):
        return UNSUPPORTED
    length = int(length_text)
    if length > max_body:
        return UNSUPPORTED
    body_start = head_end + 4
    end = body_start + length
    if len(buf) < end:
        return None
    keep_alive = "close" not in headers.get("connection", "").lower()
    return Request(method, target, headers, bytes(buf[body_start:end]), keep_alive, end)


_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


def response_head(
    status: int,
    content_type: str | None,
    length: int,
    extra: str,
    date: str,
    keep_alive: bool,
) -> bytes:
    """A response's status line and headers; `extra` is preformatted `Name: value\\r\\n` lines."""
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Length: {length}\r\n"
        f"Date: {date}\r\n"
        "Server: ringkv\r\n"
    )
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    return (head + extra + "\r\n").encode("latin-1")


def http_date(epoch_s: float) -> str:
    """An IMF-fixdate (RFC 9110 §5.6.7) for the Date header."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(epoch_s))
