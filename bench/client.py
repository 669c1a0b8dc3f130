"""Client throughput against a local 3-node cluster (N=3, W=R=2, fsync).

Starts the cluster itself (ringkv-node processes on 127.0.0.1), then measures
the async client with 64 requests in flight and the sync client from 8
threads, PUT then GET of 100-byte values, and prints ops/s with p50/p99.

    .venv/bin/python bench/client.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from ringkv import AsyncClient, Client

TOKEN = "bench"
VALUE = b"v" * 100
KEYS = 100_000


def start_cluster(base_port: int, data: str) -> list[subprocess.Popen[bytes]]:
    urls = [f"http://127.0.0.1:{base_port + i}" for i in range(3)]
    peers = ",".join(f"n{i}={u}" for i, u in enumerate(urls))
    procs = []
    for i, url in enumerate(urls):
        cmd = [
            sys.executable, "-m", "ringkv_node", "--id", f"n{i}",
            "--listen", f"127.0.0.1:{base_port + i}", "--advertise-url", url,
            "--peers", peers, "--token", TOKEN, "--data-dir", os.path.join(data, f"n{i}"),
            "--log-level", "warning",
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for url in urls:
        for _ in range(200):
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
    return procs


def summary(name: str, latencies: list[float], seconds: float) -> str:
    lat = sorted(latencies)
    p50 = lat[len(lat) // 2] * 1000
    p99 = lat[int(len(lat) * 0.99)] * 1000
    return f"{name:<34} {len(lat) / seconds:>10.0f} ops/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"


async def async_run(urls: list[str], op: str, seconds: float, inflight: int) -> str:
    latencies: list[float] = []
    async with AsyncClient(urls, token=TOKEN, pool_size=inflight) as kv:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            rnd = random.Random()
            while time.perf_counter() < deadline:
                key = f"key:{rnd.randrange(KEYS)}"
                t = time.perf_counter()
                if op == "put":
                    await kv.put(key, VALUE)
                else:
                    await kv.get(key)
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        elapsed = time.perf_counter() - start
    return summary(f"async client {op.upper()} ({inflight} in flight)", latencies, elapsed)


def sync_run(urls: list[str], op: str, seconds: float, threads: int) -> str:
    latencies: list[float] = []
    lock = threading.Lock()
    with Client(urls, token=TOKEN, pool_size=threads) as kv:
        kv.ring()
        deadline = time.perf_counter() + seconds

        def worker() -> None:
            rnd = random.Random()
            mine = []
            while time.perf_counter() < deadline:
                key = f"key:{rnd.randrange(KEYS)}"
                t = time.perf_counter()
                if op == "put":
                    kv.put(key, VALUE)
                else:
                    kv.get(key)
                mine.append(time.perf_counter() - t)
            with lock:
                latencies.extend(mine)

        start = time.perf_counter()
        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - start
    return summary(f"sync client {op.upper()} ({threads} threads)", latencies, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=17300)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="ringkv-client-bench-")
    procs = start_cluster(args.port, data)
    urls = [f"http://127.0.0.1:{args.port + i}" for i in range(3)]
    try:
        print(f"3-node cluster (N=3, W=R=2, fsync), 100-byte values, {KEYS} keys")
        print(asyncio.run(async_run(urls, "put", args.seconds, 64)))
        print(asyncio.run(async_run(urls, "get", args.seconds, 64)))
        print(sync_run(urls, "put", args.seconds, 8))
        print(sync_run(urls, "get", args.seconds, 8))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
