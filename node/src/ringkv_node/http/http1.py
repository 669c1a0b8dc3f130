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
    "FieldCache",
    "Request",
    "http_date",
    "parse_request",
    "response_head",
]

MAX_HEAD_BYTES: Final = 16384  # the request line and headers; aiohttp's limit too

_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
# aiohttp decodes a Content-Encoding body (gzip, deflate); handing such a
# request over keeps both lanes storing the same bytes
_REFUSED_FIELDS = frozenset({"transfer-encoding", "expect", "content-encoding"})


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


class _Fields(NamedTuple):
    """What a request's header block says: fields, body length, keep-alive."""

    headers: dict[str, str]
    length: int
    keep_alive: bool


FieldCache = dict[bytes, "_Fields | _Unsupported"]
"""Header blocks already parsed, by their bytes (see `parse_request`)."""

_CACHE_ENTRIES = 64
_CACHE_BLOCK_BYTES = 1024


def parse_request(
    buf: bytes | bytearray, start: int, max_body: int, cache: FieldCache | None = None
) -> Request | _Unsupported | None:
    """The request beginning at `buf[start:]`, None when incomplete, or UNSUPPORTED.

    `cache`: header blocks seen before. A client sends the same header block
    with nearly every request (only the request line changes), so a caller
    that keeps one, bounded here, parses each block once; the `headers` dict
    is then shared by those requests and must not be changed.
    """
    head_end = buf.find(b"\r\n\r\n", start)
    if head_end < 0:
        return UNSUPPORTED if len(buf) - start > MAX_HEAD_BYTES else None
    if head_end - start > MAX_HEAD_BYTES:
        return UNSUPPORTED
    line_end = buf.find(b"\r\n", start, head_end)
    if line_end < 0:
        line_end = head_end
    try:
        line = buf[start:line_end].decode("ascii")
    except UnicodeDecodeError:
        return UNSUPPORTED
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or not parts[1].startswith("/"):
        return UNSUPPORTED
    method, target = parts[0], parts[1]
    if not method.isalpha() or not method.isupper() or not target.isprintable():
        return UNSUPPORTED
    block = bytes(buf[line_end:head_end])
    fields = None if cache is None else cache.get(block)
    if fields is None:
        fields = _parse_fields(block)
        if cache is not None and len(block) <= _CACHE_BLOCK_BYTES:
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[block] = fields
    if fields is UNSUPPORTED:
        return UNSUPPORTED
    assert isinstance(fields, _Fields)
    if fields.length > max_body:
        return UNSUPPORTED
    body_start = head_end + 4
    end = body_start + fields.length
    if len(buf) < end:
        return None
    return Request(
        method, target, fields.headers, bytes(buf[body_start:end]), fields.keep_alive, end
    )


def _parse_fields(block: bytes) -> _Fields | _Unsupported:
    """The header block after the request line: `(\r\nname: value)*`."""
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        return UNSUPPORTED
    headers: dict[str, str] = {}
    for line in text.split("\r\n")[1:]:
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
    keep_alive = "close" not in headers.get("connection", "").lower()
    return _Fields(headers, int(length_text), keep_alive)


_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
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
