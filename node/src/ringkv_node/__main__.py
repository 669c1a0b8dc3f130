"""`ringkv-node`: parse flags/variables, serve on uvloop behind the fast lane, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys

from aiohttp import web

from ringkv.dirlock import DirLockedError
from ringkv_node.app import create_app
from ringkv_node.http import FrontSite, quiet
from ringkv_node.settings import Settings, SettingsError, parse_settings

__all__ = ["main", "serve"]

log = logging.getLogger("ringkv.main")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ListenError(Exception):
    """The node's port could not be bound (in use, or not allowed)."""


async def serve(settings: Settings) -> None:
    """Run the node until SIGTERM or SIGINT, then drain and close (STYLE §5)."""
    runner = web.AppRunner(
        create_app(settings),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_s,
    )
    await runner.setup()  # cleanup_ctx: storage and ring open here
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = FrontSite(runner, settings.host, settings.port, settings.shutdown_timeout_s)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(f"cannot listen on {site.name}: {exc.strerror or exc}") from None
        # What start-up made (modules, the app, the ring) lives as long as the
        # node: keep it out of the collector's full passes, which otherwise walk
        # it again and again under load.
        gc.freeze()
        # A bulk batch makes some ten short-lived tuples, lists and dicts a key:
        # at the default threshold (700) the young generation is collected a
        # dozen times a batch, about a tenth of a bulk write's CPU (measured);
        # cycles are still collected, a few times a batch.
        gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        await stop.wait()
        log.info("stopping: draining requests")
    finally:
        await runner.cleanup()  # the site first, then aiohttp's drain, then cleanup_ctx


GC_YOUNG_THRESHOLD = 50_000


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
    quiet.install()
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(settings))
    except ListenError as exc:
        print(f"ringkv-node: {exc}", file=sys.stderr)
        return 1
    except DirLockedError as exc:
        print(
            f"ringkv-node: data directory {exc}: is that node still running? "
            "Stop it, or give this one another --data-dir",
            file=sys.stderr,
        )
        return 1
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
