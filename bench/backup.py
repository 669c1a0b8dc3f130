"""Backup, restore and bulk ingest on a 3-node cluster, against etcd's snapshots, in one run.

ringkv: a 3-node local cluster (N=3, quorum, fsync) takes KEYS keys of
100-byte values through `Client.put_many` calls of BATCH keys (10,000, the
node's batch limit) from THREADS threads (ingest, keys/s); `ringkv backup
create --to DIR` backs it up; a new 3-node cluster takes `ringkv restore
--from DIR`. A third cluster takes the same keys in calls of SMALL_BATCH
(1,000, the limit before 2026-12-04), for the ratio. etcd: Debian's etcd 3.4, 3 members on
loopback, takes the same keys through its JSON gateway (1000 puts a txn,
not measured against ours: etcd's ingest is not the question), then
`etcdctl snapshot save` (from one member) and `etcdctl snapshot restore`
(one member's data directory; a 3-member restore runs it once per member).

keys/s is keys over wall-clock seconds of the command; MB/s is the keys'
and values' bytes (the user's data) over the same seconds.

    make bench-backup                 # installs etcd-server and etcd-client from Debian first
    .venv/bin/python bench/backup.py [--keys 1000000] [--threads 4]
    flock /tmp/ringkv-heavy.lock make bench-backup   # on a shared machine
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import start_cluster
from ringkv import Client

TOKEN = "bench"
VALUE = b"v" * 100
BIN = os.path.dirname(sys.executable)


def key(i: int) -> str:
    return f"key:{i:08d}"


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


def ingest(urls: list[str], keys: int, threads: int, batch: int) -> float:
    kv = Client(urls, token=TOKEN, pool_size=threads * 2, timeout=60)
    kv.ring()

    def put(start: int) -> None:
        kv.put_many({key(i): VALUE for i in range(start, min(start + batch, keys))})

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(0, keys, batch)))
    seconds = time.perf_counter() - started
    kv.close()
    return seconds


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return seconds, r.stdout


def etcd_cluster(work: str, base: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    peers = ",".join(f"e{i}=http://127.0.0.1:{base + 20 + i}" for i in range(3))
    procs, urls = [], []
    for i in range(3):
        url = f"http://127.0.0.1:{base + 10 + i}"
        cmd = [
            "etcd", "--name", f"e{i}", "--data-dir", f"{work}/e{i}",
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{base + 20 + i}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{base + 20 + i}",
            "--initial-cluster", peers, "--initial-cluster-state", "new",
            "--max-txn-ops", "1000", "--quota-backend-bytes", str(8 << 30),
            "--log-level", "error",
        ]  # fmt: skip
        log = open(f"{work}/e{i}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        urls.append(url)
    for url in urls:
        for _ in range(300):
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
    return procs, urls


async def etcd_load(urls: list[str], keys: int) -> None:
    import aiohttp

    value = base64.b64encode(VALUE).decode()
    sem = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as http:

        async def txn(n: int, start: int) -> None:
            ops = [
                {"requestPut": {"key": base64.b64encode(key(i).encode()).decode(), "value": value}}
                for i in range(start, min(start + 1000, keys))
            ]
            async with sem, http.post(f"{urls[n % 3]}/v3/kv/txn", json={"success": ops}) as r:
                if r.status != 200:
                    raise SystemExit(f"etcd load failed: {r.status} {await r.text()}")

        await asyncio.gather(*(txn(n, s) for n, s in enumerate(range(0, keys, 1000))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=10_000)  # keys a put_many call
    parser.add_argument(
        "--small-batch",
        type=int,
        default=1000,
        help="also ingest with calls of this many keys, into a cluster of its own (0: not)",
    )
    parser.add_argument("--port", type=int, default=17500)
    parser.add_argument("--skip-etcd", action="store_true")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="ringkv-backup-bench-")
    data_mb = args.keys * (len(key(0)) + len(VALUE)) / 1e6
    env = {**os.environ, "RINGKV_TOKEN": TOKEN}
    rows: list[tuple[str, float]] = []
    try:
        src = start_cluster(args.port, f"{work}/src")
        urls = [f"http://127.0.0.1:{args.port + i}" for i in range(3)]
        try:
            seconds = ingest(urls, args.keys, args.threads, args.batch)
            what = f"ringkv put_many ingest ({args.threads} threads, {args.batch:,}-key calls)"
            rows.append((what, seconds))
            backup_cmd = [f"{BIN}/ringkv", "--url", urls[0], "backup", "create"]
            seconds, out = timed([*backup_cmd, "--to", f"{work}/backups", "--quiet", "--json"], env)
            summary = json.loads(out)
            if summary["keys"] != args.keys:
                raise SystemExit(f"backup holds {summary['keys']} keys, not {args.keys}")
            rows.append(("ringkv backup create", seconds))
            backup_mb = summary["size_bytes"] / 1e6
        finally:
            stop(src)
        dst = start_cluster(args.port + 3, f"{work}/dst")
        dst_url = f"http://127.0.0.1:{args.port + 3}"
        try:
            restore_cmd = [f"{BIN}/ringkv", "--url", dst_url, "restore"]
            seconds, out = timed(
                [*restore_cmd, "--from", f"{work}/backups", "--quiet", "--json"], env
            )
            if json.loads(out)["written"] != args.keys:
                raise SystemExit(f"restore wrote {out}")
            rows.append(("ringkv restore (into 3 new nodes)", seconds))
            with Client(dst_url, token=TOKEN) as kv:
                assert kv.get(key(args.keys - 1)) == VALUE
        finally:
            stop(dst)
        if args.small_batch:  # the same ingest in smaller calls, for the ratio (design §7.13)
            small = start_cluster(args.port + 6, f"{work}/small")
            try:
                small_urls = [f"http://127.0.0.1:{args.port + 6 + i}" for i in range(3)]
                seconds = ingest(small_urls, args.keys, args.threads, args.small_batch)
                rows.append(
                    (
                        f"ringkv put_many ingest ({args.threads} threads, "
                        f"{args.small_batch:,}-key calls)",
                        seconds,
                    )
                )
            finally:
                stop(small)
        if not args.skip_etcd:
            procs, eurls = etcd_cluster(work, args.port)
            try:
                asyncio.run(etcd_load(eurls, args.keys))
                snap = f"{work}/etcd.db"
                etcd_env = {**os.environ, "ETCDCTL_API": "3"}
                save = ["etcdctl", "--endpoints", eurls[0], "snapshot", "save", snap]
                seconds, _ = timed(save, etcd_env)
                rows.append(("etcdctl snapshot save", seconds))
                snap_mb = os.path.getsize(snap) / 1e6
            finally:
                stop(procs)
            cluster = ",".join(f"e{i}=http://127.0.0.1:{args.port + 40 + i}" for i in range(3))
            total = 0.0
            for i in range(3):
                restore = [
                    "etcdctl", "snapshot", "restore", snap, "--name", f"e{i}",
                    "--data-dir", f"{work}/r{i}", "--initial-cluster", cluster,
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{args.port + 40 + i}",
                ]  # fmt: skip
                seconds, _ = timed(restore, etcd_env)
                total += seconds
                if i == 0:
                    rows.append(("etcdctl snapshot restore (one member)", seconds))
            rows.append(("etcdctl snapshot restore (3 members, one after another)", total))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.keys} keys x {len(VALUE)} B values ({data_mb:.0f} MB of keys and values)")
    print(f"ringkv backup: {backup_mb:.1f} MB in its parts", end="")
    print("" if args.skip_etcd else f"; etcd snapshot file: {snap_mb:.1f} MB")
    print(f"\n{'what':<58} {'seconds':>8} {'keys/s':>10} {'MB/s':>7}")
    for name, seconds in rows:
        print(f"{name:<58} {seconds:>8.2f} {args.keys / seconds:>10,.0f} {data_mb / seconds:>7.1f}")


if __name__ == "__main__":
    main()
