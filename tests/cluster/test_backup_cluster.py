"""Backup and restore against real node processes and a real S3-compatible server.

A 3-node cluster (N=3, quorum, fsync) gets 50,000 keys with overwrites,
deletes and TTLs; it is backed up to a directory and to S3 (moto's server,
a process on 127.0.0.1) while a writer runs, and the backups are restored
into a 1-node and a 5-node cluster: every key acknowledged before the
backup started is there with its value, version and expiry, deleted keys
stay deleted and expired ones gone. A corrupted part, a truncated part and
wrong manifests are refused before anything is written. A replica that
missed acknowledged writes (W=2 of N=3) loses nothing in a backup, and
neither does a backup that a rebalance overtakes: the partitions its owners
refuse at the old epoch are read again at the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest

from ringkv import AsyncClient, Client
from ringkv import backup as bk
from ringkv._backupretry import RingRetry
from ringkv.admin import Rebalancer
from ringkv.backupformat import Manifest
from ringkv.errors import BackupFailedError, InvalidBackupError
from ringkv.packed import HEADER_SIZE, fields, pack
from ringkv.rebalance import Step, plan
from ringkv.ring import Member, Ring
from ringkv.stores import DirStore, S3Options, S3Store

from nodeproc import AUTH, TOKEN, Cluster, NodeProcess, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

KEYS = 50_000
BUCKET = "ringkv-backups"
SHORT_TTL = 3
CLI = [sys.executable, "-c", "from ringkv.cli import main; raise SystemExit(main())"]
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


@contextlib.contextmanager
def moto_server(tmp: Path) -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port (a real HTTP server)."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    with open(tmp / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(url, timeout=1):
                    break
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        else:
            raise RuntimeError(f"moto_server did not start: {(tmp / 'moto.log').read_text()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Expected:
    """What the source cluster acknowledged, key by key."""

    live: dict[str, tuple[bytes, str, int | None]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    expiring: set[str] = field(default_factory=set)  # SHORT_TTL: gone by the restores


def load(kv: Client) -> Expected:
    exp = Expected()
    versions: dict[str, str] = {}
    for start in range(0, KEYS, 1000):
        items = {f"k:{i}": f"v0-{i}".encode() for i in range(start, start + 1000)}
        for key, res in zip(items, kv.put_many(items), strict=True):
            versions[key] = res["version"]
            exp.live[key] = (items[key], res["version"], None)
    # overwrites
    with kv.batch() as b:
        for i in range(0, 10_000, 7):
            b.put(f"k:{i}", f"v1-{i}")
    for op, res in zip(b.ops, b.results or [], strict=True):
        exp.live[str(op[1])] = (str(op[2]).encode(), res["version"], None)
    # deletes
    dels = [f"k:{i}" for i in range(10_000, 15_000)]
    kv.delete_many(dels)
    for key in dels:
        exp.live.pop(key)
        exp.deleted.add(key)
    long_ttl = {f"k:{i}": f"long-{i}".encode() for i in range(17_000, 19_000)}
    kv.put_many(long_ttl, ttl=3600)
    for key in long_ttl:
        entry = kv.get_entry(key)
        assert entry is not None and entry.expires_ms is not None
        exp.live[key] = (long_ttl[key], str(entry.version), entry.expires_ms)
    # last, short TTLs: alive when the directory backup reads them, expired by the restores
    short = {f"k:{i}": b"short" for i in range(15_000, 17_000)}
    kv.put_many(short, ttl=SHORT_TTL)
    for key in short:
        exp.live.pop(key)
        exp.expiring.add(key)
    return exp


class Writer:
    """Writes `w:<n>` keys until stopped; remembers when each was acknowledged."""

    def __init__(self, urls: list[str]) -> None:
        self.kv = Client(urls, token=TOKEN)
        self.acked: list[tuple[float, str, bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set() and n < 200_000:
            key, value = f"w:{n}", f"w{n}".encode()
            self.kv.put(key, value)
            self.acked.append((time.monotonic(), key, value))
            n += 1

    def acked_before(self, moment: float) -> dict[str, bytes]:
        return {k: v for t, k, v in list(self.acked) if t < moment}

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.kv.close()


@dataclass
class Source:
    cluster: Cluster
    urls: list[str]
    expected: Expected
    s3: str
    tmp: Path
    loaded: float  # monotonic, when the load (and its SHORT_TTL keys) ended
    backups: dict[str, tuple[str, dict[str, bytes]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    tmp = tmp_path_factory.mktemp("backup")
    cluster = Cluster.create(tmp / "src", 3)
    with moto_server(tmp) as s3:
        try:
            cluster.start()
            urls = [n.url for n in cluster.nodes]
            with Client(urls, token=TOKEN) as kv:
                expected = load(kv)
            src = Source(cluster, urls, expected, s3, tmp, time.monotonic())
            writer = Writer(urls)
            try:
                time.sleep(0.2)
                # to a directory, through the Python API
                started = time.monotonic()
                # (with partitions spooled to a file past their first 4 KiB)
                manifest = bk.create(
                    urls, TOKEN, DirStore(str(tmp / "dir")), cluster="src",
                    part_size=256 << 10, spool_bytes=4096,
                )  # fmt: skip
                raw = sum(info.raw_size for info in manifest.parts)
                assert raw > 4096 * manifest.partitions  # so partitions were spooled
                src.backups["dir"] = (manifest.backup_id, writer.acked_before(started))
                # to S3, through the CLI as a Kubernetes Job runs it
                env = {
                    **os.environ,
                    **S3_ENV,
                    "RINGKV_S3_ENDPOINT": s3,
                    "RINGKV_S3_PATH_STYLE": "1",
                }
                env.pop("RINGKV_TOKEN", None)
                (tmp / "token").write_text(TOKEN + "\n")
                env["RINGKV_TOKEN_FILE"] = str(tmp / "token")
                env["RINGKV_BACKUP_LOCATION"] = f"s3://{BUCKET}/nightly"
                s3_store(s3)._s3.create_bucket(Bucket=BUCKET)
                started = time.monotonic()
                r = subprocess.run(
                    [*CLI, "backup", "create", "--url", urls[1], "--json", "--cluster", "src",
                     "--part-size", "512k", "--zstd-level", "19"],
                    capture_output=True, text=True, env=env, timeout=300,
                )  # fmt: skip
                assert r.returncode == 0, r.stderr
                summary = json.loads(r.stdout)
                assert summary["location"] == f"s3://{BUCKET}/nightly/{summary['backup_id']}"
                assert summary["parts"] >= 2 and summary["keys"] >= KEYS - 5_000
                src.backups["s3"] = (summary["backup_id"], writer.acked_before(started))
            finally:
                writer.close()
            assert len(writer.acked) > 50, "the writer should have run during the backups"
            yield src
        finally:
            cluster.kill_all()


def s3_store(endpoint: str, prefix: str = "nightly") -> S3Store:
    os.environ.update(S3_ENV)
    return S3Store(f"s3://{BUCKET}/{prefix}", S3Options(endpoint, "us-east-1", True))


async def entries(urls: list[str], keys: list[str]) -> dict[str, tuple[bytes, str, int | None]]:
    out: dict[str, tuple[bytes, str, int | None]] = {}
    sem = asyncio.Semaphore(64)
    async with AsyncClient(urls, token=TOKEN) as kv:

        async def one(key: str) -> None:
            async with sem:
                entry = await kv.get_entry(key)
            if entry is not None:
                out[key] = (entry.value, str(entry.version), entry.expires_ms)

        await asyncio.gather(*(one(k) for k in keys))
    return out


def snapshot_entries(urls: list[str], tmp: Path) -> dict[str, tuple[bytes, str, int | None]]:
    """Every live record a quorum of each partition's owners holds, read through
    a backup of the cluster (a GET per key takes half a minute on 5 nodes here)."""
    store = DirStore(str(tmp))
    return backup_entries(store, bk.create(urls, TOKEN, store))


def backup_entries(store: DirStore, manifest: Manifest) -> dict[str, tuple[bytes, str, int | None]]:
    """The live records of a backup: key -> (value, version, expiry)."""
    out: dict[str, tuple[bytes, str, int | None]] = {}
    now = time.time_ns() // 1_000_000
    for reader in bk._parts(store, manifest):
        for block in reader.block_rows():
            for key, rec in block:
                ts, expires, tombstone, node = fields(rec)
                if not tombstone and not (expires and expires <= now):
                    value = rec[HEADER_SIZE + len(node) :]
                    out[key.decode()] = (value, f"{ts}@{node.decode()}", expires or None)
    return out


def check_restored(
    urls: list[str], expected: Expected, writes: dict[str, bytes], via: Path | None = None
) -> None:
    """Every expected key with its value, version and expiry (by GET, or `via` a
    backup of the restored cluster), nothing deleted or expired, every write."""
    with Client(urls, token=TOKEN) as kv:
        listed = set(kv.iter_keys(prefix="k:"))
    assert listed == set(expected.live), "live keys differ"
    if via is not None:
        got = snapshot_entries(urls, via)
        sample = sorted(expected.live)[::25]
        assert asyncio.run(entries(urls, sample)) == {k: got[k] for k in sample}
        writes_got = {k: v for k, v in got.items() if k.startswith("w:")}
        missing = [k for k, v in writes.items() if writes_got.get(k, (None,))[0] != v]
        assert not missing, f"writes acknowledged before the backup are missing: {missing[:5]}"
        assert not (set(got) & (expected.deleted | expected.expiring))
        got = {k: v for k, v in got.items() if k.startswith("k:")}
    else:
        got = asyncio.run(entries(urls, sorted(expected.live)))
    wrong = [k for k, v in expected.live.items() if got.get(k) != v]
    assert not wrong, (
        f"{len(wrong)} keys differ, e.g. {wrong[:3]}: {[got.get(k) for k in wrong[:3]]}"
    )
    gone = asyncio.run(entries(urls, sorted(expected.deleted | expected.expiring)))
    assert not gone, f"deleted or expired keys came back: {sorted(gone)[:5]}"
    restored_writes = asyncio.run(entries(urls, sorted(writes)))
    missing = [k for k, v in writes.items() if restored_writes.get(k, (None,))[0] != v]
    assert not missing, f"writes acknowledged before the backup started are missing: {missing[:5]}"


class CountingStore(DirStore):
    """A directory store that keeps the names it was asked for."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reads: list[str] = []

    def get(self, name: str) -> bytes:
        self.reads.append(name)
        return super().get(name)


def test_restore_into_one_node(source: Source) -> None:
    backup_id, writes = source.backups["dir"]
    time.sleep(max(0.0, source.loaded + SHORT_TTL + 0.5 - time.monotonic()))  # expired now
    target = Cluster.create(source.tmp / "one", 1)
    try:
        target.start()
        urls = [target.nodes[0].url]
        store = CountingStore(str(source.tmp / "dir"))
        summary = bk.restore(store, backup_id, urls, TOKEN)
        assert summary.expired == 2_000 and summary.tombstones == 5_000
        assert summary.coordinated == 0  # every batch written by its owners themselves
        parts = [n for n in store.reads if not n.endswith("manifest.json")]
        assert parts and sorted(parts) == sorted(set(parts))  # checked, then kept: read once
        check_restored(urls, source.expected, writes)
        # a second restore of the same backup changes nothing; with no memory
        # to keep parts in, each is read to be checked and again to be written
        store = CountingStore(str(source.tmp / "dir"))
        again = bk.restore(store, backup_id, urls, TOKEN, keep_bytes=0)
        assert again.kept == again.written == summary.written
        assert sorted(n for n in store.reads if not n.endswith("manifest.json")) == sorted(
            parts * 2
        )
    finally:
        target.kill_all()


def test_restore_into_five_nodes_from_s3(source: Source) -> None:
    backup_id, writes = source.backups["s3"]
    target = Cluster.create(source.tmp / "five", 5, extra=["--partitions", "64"])
    try:
        target.start()
        urls = [n.url for n in target.nodes]
        env = {**os.environ, **S3_ENV, "RINGKV_TOKEN": TOKEN}
        r = subprocess.run(
            [*CLI, "restore", "--url", urls[2], "--from", f"s3://{BUCKET}/nightly/{backup_id}",
             "--s3-endpoint", source.s3, "--s3-path-style", "--json"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["backup_id"] == backup_id
        check_restored(urls, source.expected, writes, via=source.tmp / "five-check")
        # a replica apply is refused when the sender's ring is not the node's,
        # or a record is not the node's to hold (5 nodes, N=3: not every partition)
        with Client(urls, token=TOKEN) as kv:
            ring = kv.ring()
        me = ring.members[0]
        theirs = next(f"x{i}" for i in range(1000) if me.id not in ring.owners_of_key(f"x{i}"))
        mine = next(f"x{i}" for i in range(1000) if me.id in ring.owners_of_key(f"x{i}"))
        record = pack(1 << 40, 0, False, b"n9", b"v")
        for key, epoch, error in [
            (mine, ring.epoch + 7, "stale_epoch"),
            (theirs, ring.epoch, "not_owner"),
        ]:
            status, doc = _apply(me.url, {"records": [[key.encode(), record]], "replica": epoch})
            assert (status, doc["error"]) == (409, error), doc
        status, doc = _apply(me.url, {"records": [[mine.encode(), record]], "replica": ring.epoch})
        assert (status, doc) == (200, {"records": 1, "kept": 0})
    finally:
        target.kill_all()


def _apply(url: str, doc: dict[str, object]) -> tuple[int, dict[str, object]]:
    body = msgpack.packb(doc, use_bin_type=True)
    headers = {**AUTH, "Content-Type": "application/msgpack"}
    req = urllib.request.Request(url + "/admin/v1/apply", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_a_restore_short_of_owners_goes_through_a_coordinator(source: Source) -> None:
    """One owner of three down: a restore at consistency all cannot be written
    by the owners alone, nor through a coordinator; at quorum it is, by them."""
    backup_id, _ = source.backups["dir"]
    target = Cluster.create(source.tmp / "short", 3)
    try:
        target.start()
        target.nodes[2].kill()
        urls = [n.url for n in target.nodes[:2]]
        store = DirStore(str(source.tmp / "dir"))
        with pytest.raises(BackupFailedError, match="could not be written"):
            bk.restore(store, backup_id, urls, TOKEN, consistency="all", timeout=5)
        summary = bk.restore(store, backup_id, urls, TOKEN, timeout=5)
        assert summary.coordinated == 0 and summary.written > 0
    finally:
        target.kill_all()


def cli(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "RINGKV_TOKEN": token or ""}
    full.pop("RINGKV_TOKEN_FILE", None)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full, timeout=120)


@pytest.fixture
def broken(source: Source, tmp_path: Path) -> Iterator[tuple[Path, str, Cluster]]:
    """A copy of the directory backup to break, and an empty 1-node cluster."""
    backup_id, _ = source.backups["dir"]
    shutil.copytree(source.tmp / "dir" / backup_id, tmp_path / "copy" / backup_id)
    target = Cluster.create(tmp_path / "t", 1)
    target.start()
    yield tmp_path / "copy", backup_id, target
    target.kill_all()


def _refused(where: Path, backup_id: str, target: Cluster, words: str) -> None:
    for args in (("backup", "verify"), ("restore", "--url", target.nodes[0].url)):
        r = cli(*args, "--from", str(where), "--id", backup_id)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1, r.stderr  # one line
    with Client(target.nodes[0].url, token=TOKEN) as kv:
        assert kv.keys(limit=1) == [], "a backup that does not verify wrote something"


def test_corrupted_part_is_refused(broken: tuple[Path, str, Cluster]) -> None:
    where, backup_id, target = broken
    part = where / backup_id / "part-00001.zst"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    _refused(where, backup_id, target, "SHA-256 does not match")


def test_truncated_part_is_refused(broken: tuple[Path, str, Cluster]) -> None:
    where, backup_id, target = broken
    part = where / backup_id / "part-00000.zst"
    part.write_bytes(part.read_bytes()[:-100])
    _refused(where, backup_id, target, "truncated")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m["partition_records"].__setitem__(0, 10**6), "its parts hold"),
        (lambda m: m.pop("parts"), "missing field 'parts'"),
        (lambda m: m["parts"][0].update(sha256="0" * 64), "SHA-256 does not match"),
    ],
    ids=["version", "counts", "no-parts", "sum"],
)  # fmt: skip
def test_wrong_manifest_is_refused(broken: tuple[Path, str, Cluster], change, words) -> None:  # type: ignore[no-untyped-def]
    where, backup_id, target = broken
    path = where / backup_id / "manifest.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    _refused(where, backup_id, target, words)


def test_list_delete_prune_and_not_found(source: Source, tmp_path: Path) -> None:
    store = DirStore(str(tmp_path / "many"))
    backup_id, _ = source.backups["dir"]
    shutil.copytree(source.tmp / "dir" / backup_id, tmp_path / "many" / backup_id)
    r = cli("backup", "list", "--from", str(tmp_path / "many"), "--json")
    assert r.returncode == 0, r.stderr
    assert [b["backup_id"] for b in json.loads(r.stdout)["backups"]] == [backup_id]
    r = cli("backup", "verify", "--from", str(tmp_path / "many"), "--id", "nope")
    assert r.returncode == 1 and "no backup nope" in r.stderr, r.stderr
    r = cli("backup", "prune", "--from", str(tmp_path / "many"), "--keep-last", "1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["pruned"] == [], r.stderr
    r = cli("backup", "delete", "--from", str(tmp_path / "many"), backup_id)
    assert r.returncode == 0, r.stderr
    assert store.backup_ids() == [] and not (tmp_path / "many" / backup_id).exists()
    r = cli("backup", "delete", "--from", str(tmp_path / "many"), backup_id)
    assert r.returncode == 1, r.stderr
    summary = tmp_path / "summary.json"
    r = cli("backup", "delete", "--from", str(tmp_path / "many"), "--missing-ok", backup_id,
            "--summary-file", str(summary))  # fmt: skip
    assert r.returncode == 0 and f"no backup {backup_id}" in r.stdout, r.stderr
    assert json.loads(summary.read_text()) == {"deleted": [], "missing": [backup_id]}
    # no token, or a wrong one, is bad input
    r = cli("backup", "create", "--url", source.urls[0], "--to", str(tmp_path / "x"), token=None)
    assert r.returncode == 2 and "needs the cluster token" in r.stderr, r.stderr
    r = cli("backup", "create", "--url", source.urls[0], "--to", str(tmp_path / "x"), token="bad")
    assert r.returncode == 2 and "wrong token" in r.stderr, r.stderr
    r = cli("backup", "create", "--url", source.urls[0], "--to", str(tmp_path / "x"),
            "--zstd-level", "20")  # fmt: skip
    assert r.returncode == 2 and "--zstd-level: must be a whole number from 1 to 19" in r.stderr


def test_restore_drill_and_a_retried_backup(source: Source, tmp_path: Path) -> None:
    """`verify --restore` restores into a node of its own and compares; `create`
    with the id of an attempt that never finished replaces its parts."""
    backup_id, _ = source.backups["dir"]
    where = tmp_path / "drill"
    shutil.copytree(source.tmp / "dir" / backup_id, where / backup_id)
    summary = tmp_path / "summary.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run(
        [*CLI, "backup", "verify", "--from", str(where / backup_id), "--restore", "--json",
         "--summary-file", str(summary)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == json.loads(summary.read_text())
    assert doc["verified"] is True and doc["drill"].startswith("restore drill passed"), doc
    live = len(source.expected.live)
    assert doc["drill_keys"] >= live  # every live key of the backup, the writer's too
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("ringkv-drill-")]  # cleaned up
    # an attempt that died before its manifest: the same id is taken again
    (tmp_path / "retry" / "b-1").mkdir(parents=True)
    (tmp_path / "retry" / "b-1" / "part-00000.zst").write_bytes(b"half a part")
    r = cli("backup", "create", "--url", source.urls[0], "--to", str(tmp_path / "retry"),
            "--id", "b-1", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli("backup", "verify", "--from", str(tmp_path / "retry"), "--id", "b-1")
    assert r.returncode == 0, r.stderr
    r = cli("backup", "create", "--url", source.urls[0], "--to", str(tmp_path / "retry"),
            "--id", "b-1")  # fmt: skip
    assert r.returncode == 2 and "exists already" in r.stderr, r.stderr


def test_s3_store_uses_multipart_for_large_parts(source: Source) -> None:
    store = s3_store(source.s3, "multipart")
    store._transfer.multipart_threshold = 8 << 20  # type: ignore[attr-defined]
    store._transfer.multipart_chunksize = 5 << 20  # type: ignore[attr-defined]
    data = os.urandom(12 << 20)
    store.put("big/part-00000.zst", data)
    assert store.get("big/part-00000.zst") == data
    head = store._s3.head_object(Bucket=BUCKET, Key="multipart/big/part-00000.zst")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # three parts of 5 MiB at most
    store.delete(store.names("big"))
    assert store.names("big") == []


def test_snapshot_route_refuses_bad_requests(source: Source) -> None:
    url = source.urls[0]

    def get(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        req = urllib.request.Request(url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, {}
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read())

    assert get("/admin/v1/snapshot/0", {})[0] == 401
    status, doc = get("/admin/v1/snapshot/256", AUTH)
    assert (status, doc["error"]) == (400, "bad_request")
    status, doc = get("/admin/v1/snapshot/3?epoch=7", AUTH)
    assert (status, doc["error"], doc["epoch"]) == (409, "stale_epoch", 1)  # says its own
    # HEAD: the GET's checks and fingerprint, no body (tries: a purge may fall in between)
    snap = url + "/admin/v1/snapshot/3"
    for _ in range(5):
        with urllib.request.urlopen(urllib.request.Request(snap, headers=AUTH, method="HEAD")) as r:
            fingerprint = r.headers["X-Ringkv-Digest"]
            assert r.status == 200 and r.read() == b"" and len(fingerprint) == 32
        with urllib.request.urlopen(urllib.request.Request(snap, headers=AUTH)) as r:
            if r.headers["X-Ringkv-Digest"] == fingerprint:
                break
    else:
        raise AssertionError("HEAD and GET of a snapshot never gave the same fingerprint")
    head = urllib.request.Request(url + "/admin/v1/snapshot/3?epoch=7", headers=AUTH, method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(head, timeout=10)
    with refused.value:
        assert refused.value.code == 409
    # GET without a partition: every owned partition's fingerprint, the HEAD's
    assert get("/admin/v1/snapshot", {})[0] == 401
    status, doc = get("/admin/v1/snapshot?epoch=7", AUTH)
    assert (status, doc["error"], doc["epoch"]) == (409, "stale_epoch", 1)
    with Client(url, token=TOKEN) as kv:
        ring = kv.ring()
    mine = sorted(ring.partitions_of(ring.members[0].id))
    assert ring.members[0].url == url and mine
    for _ in range(5):
        req = urllib.request.Request(url + "/admin/v1/snapshot?epoch=1", headers=AUTH)
        with urllib.request.urlopen(req, timeout=10) as r:
            all_prints = json.loads(r.read())
        assert all_prints["epoch"] == 1 and sorted(map(int, all_prints["digests"])) == mine
        with urllib.request.urlopen(urllib.request.Request(snap, headers=AUTH, method="HEAD")) as r:
            if r.headers["X-Ringkv-Digest"] == all_prints["digests"]["3"]:
                break
    else:
        raise AssertionError("GET /admin/v1/snapshot never gave the HEAD's fingerprint")
    req = urllib.request.Request(url + "/admin/v1/apply", data=b"\xc1", headers=AUTH, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    with err.value:
        assert err.value.code == 400


def test_a_replica_that_missed_acknowledged_writes_loses_nothing(tmp_path: Path) -> None:
    cluster = Cluster.create(tmp_path / "c", 3, extra=["--anti-entropy-interval", "1h"])
    n0, n1, n2 = cluster.nodes
    try:
        cluster.start()
        n2.signal(signal.SIGSTOP)  # n2 misses every write below
        for i in range(300):
            req = urllib.request.Request(
                f"{n0.url}/v1/kv/m:{i}?consistency=quorum", data=b"x", method="PUT", headers=AUTH
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 201
        n0.kill()  # with the hints it held for n2
        n2.signal(signal.SIGCONT)
        lost = 0
        for i in range(300):  # n2's own copy: it coordinates, and owns every key
            req = urllib.request.Request(f"{n2.url}/v1/kv/m:{i}?consistency=one", headers=AUTH)
            try:
                urllib.request.urlopen(req, timeout=10).close()
            except urllib.error.HTTPError as e:
                lost += e.code == 404
                e.close()
        assert lost == 300, "n2 should have missed the writes"
        with Client(n1.url, token=TOKEN) as kv:
            ring = kv.ring()
        part = ring.partition_of("m:0")
        with bk._Connections(10) as conns:
            prints = [bk._fingerprint(conns, n.url, part, ring.epoch, TOKEN) for n in (n1, n2)]
        assert None not in prints and prints[0] != prints[1]  # so both are read, and merged
        store = DirStore(str(tmp_path / "b"))
        manifest = bk.create([n1.url, n2.url], TOKEN, store)  # n0 is down: n1 and n2 are read
        assert manifest.records == 300
        found = bk.verify(store, manifest.backup_id)
        assert found.records == 300
    finally:
        cluster.kill_all()


def _snapshot_answers(node: NodeProcess) -> dict[str, int]:
    """How many snapshot requests `node` answered, by "METHOD status" (its /metrics)."""
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("ringkv_requests_total{") and "/admin/v1/snapshot/" in line:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = f"{labels['method']} {labels['status']}"
            out[key] = out.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


def test_a_backup_overtaken_by_a_rebalance_reads_again_at_the_new_epoch(tmp_path: Path) -> None:
    """A fourth node is added (join, stream, commit) right after the backup read
    its first partition: the owners refuse the rest at the backup's epoch (409
    stale_epoch), the backup takes the newer ring from them and reads those
    partitions from a read quorum of their owners in it, the new node among
    them. Every key acknowledged before the backup is in it, at its version."""
    cluster = Cluster.create(tmp_path / "c", 3, extra=["--partitions", "32"])
    n3 = NodeProcess("n3", tmp_path / "c")
    n3.peers = ",".join(f"{n.node_id}={n.url}" for n in [*cluster.nodes, n3])
    n3.extra = list(cluster.nodes[0].extra)
    try:
        cluster.start()
        n3.start()  # owns nothing: it takes the running ring (epoch 1) from its peers
        urls = [n.url for n in cluster.nodes]
        items = {f"r:{i}": f"v{i}".encode() for i in range(4000)}
        with Client(urls, token=TOKEN) as kv:
            versions = {
                key: res["version"] for key, res in zip(items, kv.put_many(items), strict=True)
            }
        moved: list[Ring] = []

        def progress(records: int, raw: int) -> None:
            if not moved:
                everyone = [Member(n.node_id, n.url) for n in [*cluster.nodes, n3]]
                with Rebalancer(TOKEN) as rb:
                    moved.append(rb.change(urls[0], everyone))

        store = DirStore(str(tmp_path / "b"))
        manifest = bk.create(urls, TOKEN, store, workers=1, progress=progress)
        assert moved and moved[0].epoch == 2 and moved[0].partitions_of("n3")
        assert manifest.ring_epoch == 1  # the ring it started with
        answers = {n.node_id: _snapshot_answers(n) for n in [*cluster.nodes, n3]}
        assert sum(a.get("GET 409", 0) for a in answers.values()) >= 1, answers
        assert answers["n3"].get("GET 200", 0) >= 1, answers  # read from the new ring's owners
        assert bk.verify(store, manifest.backup_id).records == len(items)
        got = backup_entries(store, manifest)
        assert got == {k: (v, versions[k], None) for k, v in items.items()}
    finally:
        cluster.kill_all()
        n3.kill()


def test_a_ring_the_nodes_never_reach_fails_the_partition_saying_why(source: Source) -> None:
    """Owners behind the backup's ring (as while they commit) are asked again a
    few times, with a short wait, then the backup fails naming the partition."""
    with Client(source.urls, token=TOKEN) as kv:
        ring = kv.ring()
    ahead = Ring.from_dict({**ring.to_dict(), "epoch": ring.epoch + 5})  # installed nowhere
    rings = bk._RingView(ahead, source.urls, TOKEN, 10.0)
    retry = RingRetry(attempts=3, backoff_s=0.01)
    with bk._Connections(10) as conns, pytest.raises(BackupFailedError) as err:
        bk._read_partition(rings, 7, bk._Reads(TOKEN, "quorum", conns), retry)
    text = str(err.value)
    assert text.startswith("partition 7: its owners refused it 3 times"), text
    assert "409 stale_epoch" in text and "run the backup again" in text, text


def _past_first_anti_entropy(urls: list[str], within_s: float = 30.0) -> None:
    """Wait until every node has done its first anti-entropy round (2 s after its
    start) and found nothing to do: with a long interval, no peer traffic then
    carries a ring's epoch between the nodes until the test makes some."""
    deadline = time.monotonic() + within_s
    while True:
        rounds = []
        for url in urls:
            req = urllib.request.Request(f"{url}/v1/status", headers=AUTH)
            with urllib.request.urlopen(req, timeout=5) as resp:
                rounds.append(json.load(resp)["anti_entropy"])
        if all(r["last_round_at_ms"] and not r["buckets_out_of_sync"] for r in rounds):
            return
        assert time.monotonic() < deadline, rounds
        time.sleep(0.2)


class _AtCommitError(Exception):
    """Stops a Rebalancer.run at its commit step."""


def test_a_backup_waits_for_a_ring_change_that_is_committing(tmp_path: Path) -> None:
    """A fourth node has joined and streamed, and one node has committed the new
    ring while the others have not yet (nothing has carried the new epoch to
    them: no writes, anti-entropy an hour away). Writes acknowledged through
    the committed node would have gone to the new ring's owners alone, so the
    backup does not begin until every member is at one epoch: with a short
    --ring-wait it fails saying so; with a longer one it begins once the commit
    is done, at the new ring, with every key acknowledged before it."""
    slow = ["--partitions", "16", "--anti-entropy-interval", "3600s"]
    cluster = Cluster.create(tmp_path / "c", 3, extra=slow)
    n3 = NodeProcess("n3", tmp_path / "c")
    n3.peers = ",".join(f"{n.node_id}={n.url}" for n in [*cluster.nodes, n3])
    n3.extra = list(cluster.nodes[0].extra)
    try:
        cluster.start()
        n3.start()
        urls = [n.url for n in cluster.nodes]
        nodes = {n.node_id: n.url for n in [*cluster.nodes, n3]}
        with Client(urls, token=TOKEN) as kv:
            old = kv.ring()
            items = {f"b:{i}": f"v{i}".encode() for i in range(2000)}
            versions = {k: r["version"] for k, r in zip(items, kv.put_many(items), strict=True)}
        target = plan(old, [Member(i, u) for i, u in nodes.items()])
        _past_first_anti_entropy(list(nodes.values()))

        def stop_at_commit(step: Step, docs: dict[str, object]) -> None:
            if step.action == "commit":
                raise _AtCommitError

        store = DirStore(str(tmp_path / "b"))
        done: list[Manifest | BaseException] = []

        def backup() -> None:
            try:
                done.append(bk.create(urls, TOKEN, store, backup_id="long", ring_wait_s=60))
            except BaseException as exc:  # the assertions below say what
                done.append(exc)

        worker = threading.Thread(target=backup)
        with Rebalancer(TOKEN) as rb:
            with pytest.raises(_AtCommitError):
                rb.run(old, target, on_progress=stop_at_commit)
            assert rb.act(Step("commit", ("n0",)), target, nodes) == []
            assert [rb.ring(u).epoch for u in nodes.values()] == [2, 1, 1, 1]

            with pytest.raises(BackupFailedError) as err:
                bk.create(urls, TOKEN, store, backup_id="short", ring_wait_s=1.0)
            text = str(err.value)
            assert text.startswith(
                "the backup cannot begin while the members are committing a ring change ("
            ), text
            assert f"{nodes['n0']} at 2" in text and f"{nodes['n1']} at 1" in text, text
            assert "it waited 1 s" in text, text
            assert store.names("short") == []  # nothing written

            worker.start()
            time.sleep(1.5)
            assert worker.is_alive() and not done, done  # waiting, not reading at epoch 1
            assert store.names("long") == []
            rb.run(old, target)  # commits the rest
        worker.join(60)
        assert not worker.is_alive()
        manifest = done[0]
        assert isinstance(manifest, Manifest), manifest
        assert manifest.ring_epoch == 2
        assert bk.verify(store, "long").records == len(items)
        got = backup_entries(store, manifest)
        assert got == {k: (v, versions[k], None) for k, v in items.items()}
    finally:
        cluster.kill_all()
        n3.kill()


def test_an_s3_endpoint_that_never_answers_times_out(tmp_path: Path) -> None:
    """botocore's own 60 s a read, five times, hung `ringkv --timeout 2 backup list`."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connections are taken and never answered
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        env = {**os.environ, **S3_ENV, "RINGKV_TOKEN": TOKEN}
        started = time.monotonic()
        r = subprocess.run(
            [*CLI, "--timeout", "1", "backup", "list", "--from", f"s3://{BUCKET}/x",
             "--s3-endpoint", endpoint, "--s3-path-style"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        took = time.monotonic() - started
    assert r.returncode == 3, r.stderr
    assert "timeout" in r.stderr.lower() or "timed out" in r.stderr.lower(), r.stderr
    assert took < 60, took  # 5 attempts of 1 s and their back-off, not 5 of 60 s


def test_latest_is_the_newest_backup_that_loads(source: Source, tmp_path: Path) -> None:
    """A corrupt manifest blocked `restore` and `verify` of the latest, naming no backup."""
    backup_id, _ = source.backups["dir"]
    shutil.copytree(source.tmp / "dir" / backup_id, tmp_path / backup_id)
    (tmp_path / "29991231T000000Z-zzzz").mkdir()  # the newest id, and no backup
    (tmp_path / "29991231T000000Z-zzzz" / "manifest.json").write_text("{not json")
    store = DirStore(str(tmp_path))
    assert bk.find(store, None).backup_id == backup_id
    assert bk.find(store, "latest").backup_id == backup_id
    with pytest.raises(InvalidBackupError, match=r"backup 29991231T000000Z-zzzz: manifest\.json"):
        bk.find(store, "29991231T000000Z-zzzz")
    shutil.rmtree(tmp_path / backup_id)
    with pytest.raises(InvalidBackupError, match=r"no backup in .* loads: backup 2999"):
        bk.find(store, None)
