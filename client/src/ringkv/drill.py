"""The restore drill: restore a backup into a throw-away one-node store and compare.

    result = drill(store, backup_id)       # verify, restore, compare, clean up
    result.ok, result.message

What a drill proves, beyond `backup.verify` (which re-reads every part and
checks sizes, sums, order and the manifest's per-partition counts): that the
backup restores. It

1. verifies the backup (`backup.verify`);
2. starts one `ringkv-node` (N=1, the backup's Q) on 127.0.0.1 in a temporary
   directory, and restores the backup into it through `backup.restore`, the
   path a real restore takes;
3. reads every partition back through the node's snapshot route and compares,
   partition by partition, the live records (not tombstones, not expired at
   one cut-off time taken after the restore) with those of the backup: their
   count and a sha256 over the sorted (key, stored record) pairs, so a value,
   a version or an expiry that differs fails the drill, and so does a deleted
   key that came back;
4. stops the node and deletes its directory, whatever happened.

A drill needs `ringkv-node` (the node image has it) and room for one copy of
the data in its temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ringkv import backup
from ringkv.backupformat import Manifest
from ringkv.client import Client
from ringkv.errors import BackupFailedError
from ringkv.local import LocalNode, last_line, node_command, wait_ready
from ringkv.packed import HEADER, TOMBSTONE
from ringkv.ring import partitioner
from ringkv.stores import Store

__all__ = ["DrillResult", "drill", "live_digests"]

START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class DrillResult:
    backup_id: str
    keys: int  # live keys compared
    partitions: int
    mismatches: tuple[str, ...] = ()
    seconds: float = 0.0
    restored: int = 0  # records the restore wrote (tombstones included)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def message(self) -> str:
        if self.ok:
            return (
                f"restore drill passed: {self.keys} live keys in {self.partitions} partitions "
                "restored into a one-node store match the backup (counts and sha256)"
            )
        more = f" (and {len(self.mismatches) - 3} more)" if len(self.mismatches) > 3 else ""
        return "restore drill failed: " + "; ".join(self.mismatches[:3]) + more


@dataclass
class _Digest:
    count: int = 0
    sha: hashlib._Hash = field(default_factory=hashlib.sha256)

    def add(self, key: bytes, rec: bytes) -> None:
        self.count += 1
        self.sha.update(len(key).to_bytes(4, "big") + key + len(rec).to_bytes(4, "big") + rec)


def _live(rec: bytes, cut_ms: int) -> bool:
    _, expires, flags, _ = HEADER.unpack_from(rec)
    return not flags & TOMBSTONE and not (expires and expires <= cut_ms)


def live_digests(
    rows: Iterator[tuple[int, bytes, bytes]], partitions: int, cut_ms: int
) -> list[tuple[int, str]]:
    """(count, sha256 hex) of the live records per partition, from (partition, key,
    record) rows in key order within each partition."""
    digests = [_Digest() for _ in range(partitions)]
    for part, key, rec in rows:
        if _live(rec, cut_ms):
            digests[part].add(key, rec)
    return [(d.count, d.sha.hexdigest()) for d in digests]


def _backup_rows(store: Store, manifest: Manifest) -> Iterator[tuple[int, bytes, bytes]]:
    part_of = partitioner(manifest.partitions)
    for key, rec in backup.records(store, manifest):
        yield part_of(key), key, rec


def _node_rows(url: str, token: str, partitions: int) -> Iterator[tuple[int, bytes, bytes]]:
    with Client([url], token=token, timeout=30.0) as kv:
        epoch = kv.ring().epoch
    for part in range(partitions):
        for key, rec in backup.snapshot_rows(url, part, epoch, token):
            yield part, key, rec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drill(
    store: Store,
    backup_id: str | None,
    *,
    workdir: str | None = None,
    progress: backup.Progress | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> DrillResult:
    """Verify backup `backup_id` (None: the newest), restore it into a one-node
    store of its own and compare; the result says what differed, if anything."""
    started = time.perf_counter()
    found = backup.verify(store, backup_id)
    manifest = found.manifest
    root = tempfile.mkdtemp(prefix="ringkv-drill-", dir=workdir)
    node = LocalNode("drill-0", "127.0.0.1", _free_port(), os.path.join(root, "node"))
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "RINGKV_TOKEN": token,
        "RINGKV_PARTITIONS": str(manifest.partitions),
        "RINGKV_REPLICATION_FACTOR": "1",
        "RINGKV_DURABILITY": "async",  # a throw-away store: nothing to keep across a crash
    }
    log_path = os.path.join(root, "node.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            node_command(node, [node], []),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        if not wait_ready(node.url, START_TIMEOUT_S, lambda: proc.poll() is None):
            why = last_line(log_path) or "(no log)"
            raise BackupFailedError(f"restore drill: the throw-away node did not start: {why}")
        summary = backup.restore(
            store, manifest.backup_id, [node.url], token, progress=progress, now_ms=now_ms
        )
        cut = now_ms()
        want = live_digests(_backup_rows(store, manifest), manifest.partitions, cut)
        have = live_digests(
            _node_rows(node.url, token, manifest.partitions), manifest.partitions, cut
        )
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    mismatches = tuple(
        f"partition {p}: {h[0]} live keys restored, the backup has {w[0]}"
        if h[0] != w[0]
        else f"partition {p}: the restored records differ from the backup's (sha256)"
        for p, (w, h) in enumerate(zip(want, have, strict=True))
        if w != h
    )
    return DrillResult(
        manifest.backup_id,
        sum(w[0] for w in want),
        manifest.partitions,
        mismatches,
        time.perf_counter() - started,
        summary.written,
    )
