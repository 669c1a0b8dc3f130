"""Readiness follows the writer: a commit stuck on a stalled disk, or a
write-ahead log that failed, makes the node not ready."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ringkv_node.cluster import node as node_module
from ringkv_node.cluster.node import Node
from ringkv_node.metrics import Metrics
from ringkv_node.replica.kv import KV
from ringkv_node.settings import parse_settings
from ringkv_node.storage import Storage, StorageError

from fakenet import FakeNetwork, FakeTransport, HeldWriter


def make_node(tmp_path: Path) -> tuple[Node, Storage]:
    settings = parse_settings(
        ["--id", "n0", "--listen", "127.0.0.1:17999", "--data-dir", str(tmp_path)],
        {},
        hostname="h",
    )
    storage = Storage(str(tmp_path / "lmdb"), map_size=64 << 20, partitions=settings.partitions)
    kv = KV(storage, "n0", clock_ms=lambda: 1_700_000_000_000, tombstone_grace_ms=60_000)
    node = Node(settings, kv, Metrics(), FakeTransport(FakeNetwork(), "n0"))
    node.ready = True
    return node, storage


async def test_a_stalled_commit_makes_the_node_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, storage = make_node(tmp_path)
    try:
        assert node.not_ready_reasons() == []
        monkeypatch.setattr(node_module, "WRITER_STALL_S", 0.05)
        writer = HeldWriter(storage)
        await asyncio.sleep(0.1)
        reasons = node.not_ready_reasons()
        assert len(reasons) == 1 and reasons[0].startswith("storage writer stalled")
        await writer.release()
        assert node.not_ready_reasons() == []
    finally:
        storage.close()


async def test_a_failed_log_write_refuses_writes_and_makes_the_node_not_ready(
    tmp_path: Path,
) -> None:
    node, storage = make_node(tmp_path)
    log = storage._wal
    try:
        assert log._fd is not None
        os.close(log._fd)
        log._fd = os.open(os.devnull, os.O_RDONLY)  # the next append fails (EBADF)
        rec = node.kv.stamp(b"v", None)
        with pytest.raises(StorageError, match="write-ahead log failed"):
            await storage.write(lambda wt: wt.apply_lww(b"k", rec))
        with pytest.raises(StorageError, match="restart the node"):
            await storage.write(lambda wt: wt.apply_lww(b"k2", rec))
        reasons = node.not_ready_reasons()
        assert len(reasons) == 1 and reasons[0].startswith("storage refuses writes")
    finally:
        storage.close()
