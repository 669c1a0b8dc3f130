"""Readiness follows the writer: a commit stuck on a stalled disk makes the node not ready."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ringkv_node import node as node_module
from ringkv_node.kv import KV
from ringkv_node.metrics import Metrics
from ringkv_node.node import Node
from ringkv_node.settings import parse_settings
from ringkv_node.storage import Storage

from fakenet import FakeNetwork, FakeTransport, HeldWriter


async def test_a_stalled_commit_makes_the_node_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = parse_settings(
        ["--id", "n0", "--listen", "127.0.0.1:17999", "--data-dir", str(tmp_path)],
        {},
        hostname="h",
    )
    storage = Storage(str(tmp_path / "lmdb"), map_size=64 << 20, partitions=settings.partitions)
    kv = KV(storage, "n0", clock_ms=lambda: 1_700_000_000_000, tombstone_grace_ms=60_000)
    node = Node(settings, kv, Metrics(), FakeTransport(FakeNetwork(), "n0"))
    node.ready = True
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
