"""The async client's HTTP transport against aiohttp's client, in one process.

Starts one node (no fsync: the node is not what is measured) pinned to CPU 0,
and from CPU 1 reads one key with 64 requests in flight, alternating
aiohttp's `ClientSession` and the client's own pool (`ringkv._aiopool`), three
rounds of 3 s each. Both shells parse the same answers; only the transport
differs.

    .venv/bin/python bench/client_transport.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable

import aiohttp

from ringkv._aiopool import Pool

IN_FLIGHT = 64
SECONDS = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def rate(send: Callable[[], Awaitable[None]]) -> float:
    done = 0
    stop = time.perf_counter() + SECONDS

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await send()
            done += 1

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return done / SECONDS


async def compare(url: str) -> None:
    pool = Pool(IN_FLIGHT, 5.0)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT))

    async def via_pool() -> None:
        resp = await pool.request("GET", url, None, {})
        assert resp.status == 200

    async def via_aiohttp() -> None:
        async with session.request("GET", url) as resp:
            await resp.read()
            assert resp.status == 200

    try:
        for _ in range(3):
            theirs, ours = await rate(via_aiohttp), await rate(via_pool)
            print(f"aiohttp ClientSession {theirs:8.0f} GET/s   ringkv pool {ours:8.0f} GET/s")
    finally:
        await session.close()
        await pool.close()


def main() -> int:
    port = free_port()
    work = tempfile.mkdtemp(prefix="ringkv-transport-")
    node_cmd = [sys.executable, "-m", "ringkv_node", "--id", "t", "--listen",
                f"127.0.0.1:{port}", "--data-dir", work, "--durability", "async",
                "--log-level", "warning"]  # fmt: skip
    node = subprocess.Popen(["taskset", "-c", "0", *node_cmd], stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        put = urllib.request.Request(base + "/v1/kv/k", data=b"v" * 100, method="PUT")
        urllib.request.urlopen(put, timeout=5).read()
        os.sched_setaffinity(0, {1})
        asyncio.run(compare(base + "/v1/kv/k"))
    finally:
        node.terminate()
        node.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
