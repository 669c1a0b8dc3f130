"""`ringkv-node`: parse flags/variables, run the app on uvloop, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

from aiohttp import web

from ringkv_node.app import create_app
from ringkv_node.settings import SettingsError, parse_settings

__all__ = ["main"]


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(
            sys.argv[1:] if argv is None else argv, os.environ, hostname=socket.gethostname()
        )
    except SettingsError as exc:
        print(f"ringkv-node: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_s,
        print=None,
        loop=loop,
        reuse_address=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
