"""The clients' HTTP transports against the general-purpose ones, in one process.

Starts one node (no fsync: the node is not what is measured) pinned to CPU 0,
and from CPU 1 reads one key, three rounds of 3 s each, alternating:
- async, 64 requests in flight: aiohttp's `ClientSession` against the async
  client's own pool (`ringkv._aiopool`);
- blocking, 8 threads: `http.client` against the sync client's socket pool
  (`ringkv._syncpool.Pool`).

    .venv/bin/python bench/client_transport.py
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable

import aiohttp

from ringkv._aiopool import Pool
from ringkv._core import Request
from ringkv._syncpool import Pool as SyncPool

IN_FLIGHT = 64
THREADS = 8
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


def threaded_rate(send: Callable[[], None]) -> float:
    done = [0] * THREADS
    stop = time.perf_counter() + SECONDS

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            send()
            done[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / SECONDS


def compare_blocking(url: str, port: int) -> None:
    pool = SyncPool(32, 5.0)
    local = threading.local()

    def via_pool() -> None:
        assert pool.send(Request("GET", url)).status == 200

    def via_stdlib() -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v1/kv/k")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200

    for _ in range(3):
        theirs, ours = threaded_rate(via_stdlib), threaded_rate(via_pool)
        print(f"http.client           {theirs:8.0f} GET/s   ringkv pool {ours:8.0f} GET/s")
    pool.close()


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
        compare_blocking(base + "/v1/kv/k", port)
    finally:
        node.terminate()
        node.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
