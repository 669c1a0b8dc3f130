"""The bulk write path over the fake network: one replica call per peer per batch."""

from __future__ import annotations

import pytest
from test_fakenet import drain, local

from ringkv_node.cluster import NotEnoughReplicasError, write_bulk
from ringkv_node.model import BatchOp, records

from fakenet import FakeNetwork


def batch(net: FakeNetwork, via: str, n: int, value: bytes = b"v") -> tuple[list, int]:
    ops = [BatchOp("put", b"k%d" % i, value + b"%d" % i) for i in range(n)]
    items, stamps = net.members[via].kv.stamp_packed(ops)
    return items, max(stamps)


async def test_a_batch_is_one_call_per_peer_and_one_log_record(net: FakeNetwork) -> None:
    n0 = net.members["n0"]
    items, max_ts = batch(net, "n0", 500)
    commits = []
    n0.kv.storage._committer._on_batch = lambda ops, s: commits.append(ops)
    previous = await write_bulk(n0.coordinator, items, "quorum", max_ts)
    assert previous == [None] * 500
    assert sorted(n0.transport.raw_calls) == ["n1", "n2"]  # 3 owners of every key: 2 peers
    assert commits == [1]  # the coordinator's own share: one operation, one log record
    for node in ("n0", "n1", "n2"):
        assert local(net, node, b"k7") == b"v7"
    # again: every replica answers the previous records, newest first
    items2, max_ts2 = batch(net, "n1", 500, b"w")
    previous = await write_bulk(net.members["n1"].coordinator, items2, "all", max_ts2)
    assert [records.decode(p).value for p in previous if p is not None][:2] == [b"v0", b"v1"]
    assert local(net, "n2", b"k0") == b"w0"


async def test_a_failed_peer_is_hinted_and_quorum_decides(net: FakeNetwork) -> None:
    n0 = net.members["n0"]
    net.isolate("n2")
    items, max_ts = batch(net, "n0", 100)
    await write_bulk(n0.coordinator, items, "quorum", max_ts)
    await drain(net)
    assert n0.hints.backlog == {"n2": 100}
    with pytest.raises(NotEnoughReplicasError):
        await write_bulk(n0.coordinator, items, "all", max_ts)


async def test_older_records_do_not_overwrite_newer_ones(net: FakeNetwork) -> None:
    n0 = net.members["n0"]
    new, new_ts = batch(net, "n0", 10, b"new")
    old = [(k, records.pack(5, 0, False, b"n9", b"old")) for k, _ in new]
    await write_bulk(n0.coordinator, new, "all", new_ts)
    previous = await write_bulk(n0.coordinator, old, "all", 5)
    assert all(
        p is not None and records.newer_raw(p, r) for p, (_, r) in zip(previous, old, strict=True)
    )
    assert local(net, "n1", b"k3") == b"new3"
