"""The aiohttp application factory: wiring, and what opens and closes with it.

`create_app(settings)` builds the app; `cleanup_ctx` opens storage and the
ring on start-up and closes them in reverse order on shutdown, after aiohttp
has drained in-flight requests (STYLE §5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ringkv import dirlock
from ringkv_node.cluster import Node, RingState, ring_from_settings
from ringkv_node.http import KV_KEY, METRICS_KEY, NODE_KEY, SETTINGS_KEY, routes
from ringkv_node.metrics import Metrics
from ringkv_node.net import HttpTransport
from ringkv_node.replica import KV
from ringkv_node.settings import Settings
from ringkv_node.storage import Storage

__all__ = ["create_app"]

log = logging.getLogger("ringkv.app")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def create_app(
    settings: Settings, *, clock_ms: Callable[[], int] = wall_clock_ms
) -> web.Application:
    limits = settings.limits
    app = web.Application(
        client_max_size=max(limits.max_value_bytes, limits.max_batch_bytes) + 1024,
        handler_args={"max_field_size": 16384},
    )
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = Metrics()
    app.add_routes(routes(settings.token, settings.data_auth))

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        # Before anything else in the directory is read or written: a second
        # process on it would write the checkpoint over a live store (`dirlock`).
        with dirlock.locked(settings.data_dir):
            metrics = app[METRICS_KEY]
            storage = await asyncio.to_thread(
                Storage,
                os.path.join(settings.data_dir, "lmdb"),
                map_size=settings.map_size,
                fsync=settings.durability == "fsync",
                partitions=settings.partitions,
                on_batch=metrics.observe_batch,
            )
            kv = KV(
                storage,
                settings.node_id,
                clock_ms=clock_ms,
                tombstone_grace_ms=int(settings.tombstone_grace_s * 1000),
            )
            rings = RingState(ring_from_settings(settings))
            transport = HttpTransport(
                settings.node_id, rings, settings.token, timeout_s=settings.replica_timeout_s
            )
            node = Node(settings, kv, metrics, transport, rings=rings)
            app[KV_KEY] = kv
            app[NODE_KEY] = node
            await node.load_ring()
            node.ready = True
            log.info(
                "node %s ready: %s, ring epoch %d, %s durability",
                settings.node_id,
                settings.advertise_url,
                node.ring.epoch,
                settings.durability,
            )
            try:
                yield
            finally:
                node.ready = False
                await node.coordinator.drain()
                await transport.close()
                await storage.aclose()
                log.info("storage closed")

    async def background_ctx(app: web.Application) -> AsyncIterator[None]:
        node = app[NODE_KEY]
        tasks = [
            asyncio.create_task(_sweep(app, settings.sweep_interval_s), name="sweeper"),
            asyncio.create_task(node.hint_loop(), name="hints"),
            asyncio.create_task(node.membership.drop_loop(), name="drop"),
        ]
        if len(node.ring.members) > 1:
            tasks.append(asyncio.create_task(node.anti_entropy_loop(), name="anti-entropy"))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(storage_ctx)
    app.cleanup_ctx.append(background_ctx)

    async def on_shutdown(app: web.Application) -> None:
        if NODE_KEY in app:
            node = app[NODE_KEY]
            node.draining = True

    app.on_shutdown.append(on_shutdown)
    return app


async def _sweep(app: web.Application, interval_s: float) -> None:
    """Purge expired keys and old tombstones, a bounded chunk at a time."""
    kv = app[KV_KEY]
    metrics = app[METRICS_KEY]
    while True:
        await asyncio.sleep(interval_s)
        try:
            for _ in range(100):
                purged = await kv.purge(limit=1000)
                metrics.purged.inc(purged)
                if purged < 1000:
                    break
        except Exception:
            log.exception("purge failed; will retry")
