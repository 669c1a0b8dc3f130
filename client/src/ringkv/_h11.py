"""HTTP/1.1 for the asyncio client, sans I/O: request bytes out, responses in.

The async client spends most of its CPU in its HTTP library, not in ringkv,
so its connections speak HTTP/1.1 through this small module: `request_bytes`
builds a request, `ResponseParser` turns received bytes into responses
(`Content-Length` or chunked bodies, keep-alive; the client never sends
HEAD, whose answers would need the method to parse). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from ringkv.digits import is_digits

__all__ = [
    "MAX_HEAD_BYTES",
    "ParsedResponse",
    "Prepared",
    "ProtocolError",
    "ResponseParser",
    "prepare",
    "request_bytes",
]

MAX_HEAD_BYTES = 65536


class ProtocolError(Exception):
    """The server sent something that is not an HTTP/1.1 response."""


class ParsedResponse(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    keep_alive: bool


class Prepared(NamedTuple):
    scheme: str
    host: str
    port: int
    data: bytes  # the whole request


def prepare(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> Prepared:
    """Where to send a request for `url`, and its bytes."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    data = request_bytes(method, parts.netloc, target, headers, body)
    return Prepared(parts.scheme, parts.hostname or "127.0.0.1", port, data)


def request_bytes(
    method: str, host: str, target: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


class ResponseParser:
    """Feed bytes with `feed`; take complete responses with `next`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[int, dict[str, str]] | None = None
        self._until_close = False  # the last body was delimited by the connection's end

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self, *, eof: bool = False) -> ParsedResponse | None:
        """The next complete response, or None until more bytes come.

        With `eof`, the connection has closed: a body delimited by the close
        is complete, anything else half-received is a `ProtocolError`.
        """
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                if eof and self._buf:
                    raise ProtocolError("connection closed in the middle of a response head")
                return None
            self._head = _parse_head(bytes(self._buf[:end]).decode("latin-1"))
            del self._buf[: end + 4]
        status, headers = self._head
        body = self._body(status, headers, eof)
        if body is None:
            return None
        self._head = None
        keep_alive = not self._until_close and "close" not in headers.get("connection", "").lower()
        return ParsedResponse(status, headers, body, keep_alive)

    def _body(self, status: int, headers: dict[str, str], eof: bool) -> bytes | None:
        self._until_close = False
        if status < 200 or status in (204, 304):
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._chunked(eof)
        length_text = headers.get("content-length")
        if length_text is not None:
            if not is_digits(length_text):
                raise ProtocolError(f"bad Content-Length {length_text!r}")
            length = int(length_text)
            if len(self._buf) < length:
                if eof:
                    raise ProtocolError("connection closed in the middle of a response body")
                return None
            body = bytes(self._buf[:length])
            del self._buf[:length]
            return body
        if not eof:  # delimited by the close
            return None
        self._until_close = True
        body, self._buf = bytes(self._buf), bytearray()
        return body

    def _chunked(self, eof: bool) -> bytes | None:
        chunks: list[bytes] = []
        pos = 0
        buf = self._buf
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                break
            size_text = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text!r}") from None
            if size == 0:  # then trailer fields, if any, and an empty line
                trailer_end = buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    break
                del buf[: trailer_end + 4]
                return b"".join(chunks)
            start = line_end + 2
            if len(buf) < start + size + 2:
                break
            chunks.append(bytes(buf[start : start + size]))
            pos = start + size + 2
        if eof:
            raise ProtocolError("connection closed in the middle of a chunked body")
        return None


def _parse_head(head: str) -> tuple[int, dict[str, str]]:
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not is_digits(parts[1]):
        raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers
