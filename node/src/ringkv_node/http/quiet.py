"""aiohttp's own log of a client's malformed request: one line, not a traceback.

aiohttp refuses bad framing (a Content-Length of `-1` or `0x1`, a bad chunk
size, an over-long request line) and bodies that do not decode (`gzip` that
is not) itself, and logs each at ERROR with a traceback, as if the node had
failed. Anyone can send them, without a token, so the filter turns those
records into one WARNING line; any other record of that logger is untouched.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

__all__ = ["MalformedRequestFilter", "install"]

LOGGER = "aiohttp.server"


class MalformedRequestFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            record.msg = "a malformed request was refused: %s"
            record.args = (exc,)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def install() -> None:
    logging.getLogger(LOGGER).addFilter(MalformedRequestFilter())
