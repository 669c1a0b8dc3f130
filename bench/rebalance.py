"""How long a 3->5 rebalance of 100,000 keys (1 KiB values) takes, under writes.

Starts 3 nodes (N=3, quorum, fsync), loads the keys, starts 2 empty nodes and
rebalances onto them with `ringkv.admin.Rebalancer` while 8 async clients
keep writing; prints the rebalance time and the write throughput before and
during it.

    .venv/bin/python bench/rebalance.py [--keys 100000] [--value-bytes 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from ringkv import AsyncClient, Client
from ringkv.admin import Rebalancer
from ringkv.errors import RingkvError
from ringkv.ring import Member

TOKEN = "bench"


def start(node: int, base: int, data: str, peers: str) -> subprocess.Popen[bytes]:
    url = f"http://127.0.0.1:{base + node}"
    cmd = [
        sys.executable, "-m", "ringkv_node", "--id", f"n{node}",
        "--listen", f"127.0.0.1:{base + node}", "--advertise-url", url, "--peers", peers,
        "--token", TOKEN, "--data-dir", os.path.join(data, f"n{node}"), "--log-level", "warning",
        "--map-size", "8Gi",
    ]  # fmt: skip
    log = open(os.path.join(data, f"n{node}.log"), "ab")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"n{node} did not start")


class Writers:
    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.count = 0
        self.failed = 0
        self.last_error = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _run(self) -> None:
        async with AsyncClient(self.urls, token=TOKEN) as kv:

            async def one(w: int) -> None:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    try:
                        await kv.put(f"live-{w}-{n % 1000}", b"w" * 100)
                    except RingkvError as exc:
                        self.failed += 1
                        self.last_error = str(exc)
                        continue
                    self.count += 1

            await asyncio.gather(*(one(w) for w in range(8)))

    def rate(self, seconds: float) -> float:
        before = self.count
        time.sleep(seconds)
        return (self.count - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--port", type=int, default=17400)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="ringkv-rebalance-bench-")
    urls = [f"http://127.0.0.1:{args.port + i}" for i in range(5)]
    peers = ",".join(f"n{i}={u}" for i, u in enumerate(urls))
    three = ",".join(peers.split(",")[:3])
    procs = [start(i, args.port, data, three) for i in range(3)]
    try:
        t = time.perf_counter()
        value = os.urandom(args.value_bytes)
        with Client(urls[:3], token=TOKEN, timeout=30) as kv:
            for s in range(0, args.keys, 500):
                kv.put_many({f"key:{i}": value for i in range(s, min(s + 500, args.keys))})
        load_s = time.perf_counter() - t
        procs += [start(i, args.port, data, peers) for i in (3, 4)]
        writers = Writers(urls[:3])
        writers.thread.start()
        before = writers.rate(5)
        rates: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rates.append(writers.rate(1))

        sampler = threading.Thread(target=sample)
        sampler.start()
        t = time.perf_counter()
        with Rebalancer(TOKEN, timeout=60) as rb:
            ring = rb.change(urls[0], [Member(f"n{i}", u) for i, u in enumerate(urls)])
        took = time.perf_counter() - t
        done.set()
        sampler.join()
        writers.stop.set()
        writers.thread.join()
        during = sum(rates) / max(1, len(rates))
        print(
            f"loaded {args.keys} keys of {args.value_bytes} B in {load_s:.1f}s (N=3, quorum, fsync)"
        )
        print(f"rebalance 3 -> 5 nodes (ring epoch {ring.epoch}): {took:.1f}s")
        print(f"quorum PUT/s from 8 async clients: {before:.0f} before, {during:.0f} during")
        if writers.failed:
            print(f"writes refused during the run: {writers.failed} (last: {writers.last_error})")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        if os.environ.get("KEEP_DATA"):
            print(f"data and logs kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
