"""KV semantics over real LMDB with an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ringkv.versions import Version
from ringkv_node.model import BatchOp, Record
from ringkv_node.model.quorum import Page, merge_pages
from ringkv_node.replica import KV, Applied
from ringkv_node.storage import Storage, WriteTxn


class LocalKV(KV):
    """`KV` with one-call local writes, for these tests only (the node writes
    through its coordinator: `KV.stamp` then `KV.enqueue_apply`)."""

    async def put(self, key: bytes, value: bytes, ttl_s: int | None = None) -> Applied:
        return await self.apply(key, self.stamp(value, ttl_s))

    async def delete(self, key: bytes) -> Applied:
        return await self.apply(key, self.stamp(b"", None, tombstone=True))

    async def batch(self, ops: Sequence[BatchOp], *, atomic: bool) -> list[Applied]:
        """Apply many ops; `atomic` puts them in one transaction (all or none)."""
        stamped = [(op.key, self.stamp_op(op)) for op in ops]

        def apply_in(wt: WriteTxn, key: bytes, rec: Record) -> Applied:
            prev, written = wt.apply_lww(key, rec)
            return Applied(prev, written, rec)

        if atomic:
            result: list[Applied] = await self.storage.write(
                lambda wt: [apply_in(wt, k, r) for k, r in stamped]
            )
            return result
        # Not atomic: each op is its own write, but they still share commits.
        return list(
            await asyncio.gather(
                *(self.storage.write(lambda wt, k=k, r=r: apply_in(wt, k, r)) for k, r in stamped)
            )
        )


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kv(tmp_path: Path, clock: Clock) -> Iterator[KV]:
    storage = Storage(str(tmp_path / "db"), map_size=64 << 20)
    yield LocalKV(storage, "n1", clock_ms=clock, tombstone_grace_ms=60_000)
    storage.close()


async def test_last_writer_wins_for_replayed_records(kv: KV) -> None:
    new = Record(Version(500 << 16, "b"), b"new")
    old = Record(Version(400 << 16, "a"), b"old")
    assert (await kv.apply(b"k", new)).applied
    applied = await kv.apply(b"k", old)  # a late replica write must not win
    assert not applied.applied and applied.previous == new
    assert kv.get(b"k") == new
    # same timestamp: the writer id breaks the tie, on every replica alike
    tie = Record(Version(500 << 16, "c"), b"tie")
    assert (await kv.apply(b"k", tie)).applied


async def test_a_tombstone_shadows_older_writes(kv: KV) -> None:
    await kv.put(b"k", b"v")
    deleted = await kv.delete(b"k")
    assert deleted.applied
    late = Record(Version(1 << 16, "z"), b"zombie")
    assert not (await kv.apply(b"k", late)).applied
    assert kv.get(b"k") is None


async def test_delete_of_absent_key_leaves_a_tombstone(kv: KV) -> None:
    """A replica that missed the write must still shadow it if it arrives late."""
    result = await kv.delete(b"never")
    assert result.applied and result.previous is None
    late = Record(Version(1 << 16, "z"), b"late")
    assert not (await kv.apply(b"never", late)).applied
    assert kv.get(b"never") is None


async def test_ttl_and_purge(kv: KV, clock: Clock) -> None:
    await kv.put(b"short", b"1", ttl_s=10)
    await kv.put(b"keep", b"2")
    await kv.put(b"gone", b"3")
    await kv.delete(b"gone")
    assert kv.get(b"short") is not None
    clock.ms += 10_000
    assert kv.get(b"short") is None
    assert list_all(kv, b"", 10) == [[b"keep"]]
    assert await kv.purge() == 1  # the expired key; the tombstone is within its grace
    assert kv.storage.stats().entries == 2
    clock.ms += 60_000
    assert await kv.purge() == 1  # now the tombstone too
    assert kv.storage.stats().entries == 1
    # a purge takes its record out of its partition's bucket digest (a
    # partition emptied keeps a row of zeros; a rebuild has none)
    kept = {p: row for p, row in kv.storage.bucket_digests().items() if any(row)}
    assert kept == kv.storage._rebuild_digests()


def list_all(kv: KV, prefix: bytes, limit: int) -> list[list[bytes]]:
    """Every page of live keys, as the node lists one replica (scan + merge)."""
    pages: list[list[bytes]] = []
    cursor: bytes | None = None
    for _ in range(100):
        entries, full = kv.scan_entries(prefix, cursor, limit + 1)
        keys, cursor = merge_pages([Page(entries, full)], limit)
        pages.append(keys)
        if cursor is None:
            return pages
    raise AssertionError("listing did not end")


async def test_listing_skips_dead_entries_and_pages(kv: KV) -> None:
    await kv.batch([BatchOp("put", f"a{i:03d}".encode(), b"v") for i in range(30)], atomic=False)
    for i in range(0, 30, 2):
        await kv.delete(f"a{i:03d}".encode())
    await kv.put(b"b", b"other prefix")
    pages = list_all(kv, b"a", 10)
    assert all(len(page) <= 10 for page in pages)
    assert [k for page in pages for k in page] == [f"a{i:03d}".encode() for i in range(1, 30, 2)]
    assert list_all(kv, b"c", 10) == [[]]


async def test_atomic_batch_is_one_transaction(kv: KV) -> None:
    results = await kv.batch(
        [BatchOp("put", b"x", b"1"), BatchOp("put", b"y", b"2", ttl_s=5), BatchOp("delete", b"z")],
        atomic=True,
    )
    assert [r.applied for r in results] == [True, True, True]  # z gets a tombstone
    assert kv.get(b"y") is not None and kv.get(b"y").expires_ms > 0  # type: ignore[union-attr]
