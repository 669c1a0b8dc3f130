"""Storage against real LMDB in tmp_path."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from ringkv.ring import partitioner
from ringkv.versions import Version
from ringkv_node.model import records
from ringkv_node.model.records import Record
from ringkv_node.replica.snapshot import FRAME_BYTES, next_frames
from ringkv_node.storage import (
    KeyTooLongError,
    OpRefusedError,
    Storage,
    StorageFullError,
    WriteTxn,
    engine,
)


def rec(ts: int, value: bytes = b"v", **kw: object) -> Record:
    return Record(Version(ts, "n1"), value, **kw)  # type: ignore[arg-type]


def put(key: bytes, r: Record):  # type: ignore[no-untyped-def]
    def op(wt: WriteTxn) -> Record | None:
        return wt.apply_lww(key, r)[0]

    return op


@pytest.fixture
def storage(tmp_path: Path):  # type: ignore[no-untyped-def]
    batches: list[int] = []
    s = Storage(str(tmp_path / "db"), map_size=64 << 20, on_batch=lambda n, t: batches.append(n))
    s.batches = batches  # type: ignore[attr-defined]
    yield s
    s.close()


async def test_write_read_scan_and_reopen(storage: Storage, tmp_path: Path) -> None:
    for i in range(10):
        assert await storage.write(put(f"k{i}".encode(), rec(i + 1))) is None
    assert storage.get(b"k3") == rec(4)
    assert storage.get(b"nope") is None
    assert [k for k, _ in storage.scan(b"k5", inclusive=False, limit=3)] == [b"k6", b"k7", b"k8"]
    assert len(storage.scan(b"", inclusive=True, limit=100)) == 10
    assert storage.hlc_floor() == 10
    storage.close()
    again = Storage(str(tmp_path / "db"), map_size=64 << 20)
    try:
        assert again.get(b"k9") == rec(10)
        assert again.hlc_floor() == 10
    finally:
        again.close()


async def test_concurrent_writes_share_transactions(storage: Storage) -> None:
    await asyncio.gather(*(storage.write(put(f"c{i}".encode(), rec(i + 1))) for i in range(500)))
    batches = storage.batches  # type: ignore[attr-defined]
    assert sum(batches) == 500
    assert len(batches) < 500
    assert max(batches) > 1
    assert storage.stats().entries == 500


async def test_refused_op_does_not_spoil_its_batch(storage: Storage) -> None:
    def refuse(wt: WriteTxn) -> None:
        raise OpRefusedError("no")

    results = await asyncio.gather(
        storage.write(put(b"a", rec(1))), storage.write(refuse), return_exceptions=True
    )
    assert isinstance(results[1], OpRefusedError)
    assert storage.get(b"a") == rec(1)


async def test_a_buggy_op_fails_alone_and_writes_nothing(storage: Storage) -> None:
    def buggy(wt: WriteTxn) -> None:
        wt.apply_lww(b"half", rec(5))
        raise KeyError("bug")

    results = await asyncio.gather(
        *(storage.write(put(f"ok{i}".encode(), rec(i + 1))) for i in range(5)),
        storage.write(buggy),
        return_exceptions=True,
    )
    assert isinstance(results[-1], KeyError)
    assert storage.get(b"half") is None
    assert all(storage.get(f"ok{i}".encode()) is not None for i in range(5))


async def test_a_key_longer_than_lmdb_takes_fails_alone(storage: Storage) -> None:
    """It failed every write of its transaction (503s for writes of other clients)."""
    long_key = b"k" * 600
    results = await asyncio.gather(
        *(storage.write(put(f"ok{i}".encode(), rec(i + 1))) for i in range(5)),
        storage.write(put(long_key, rec(9))),
        storage.write(lambda wt: wt.apply_raw_many([(b"ok-raw", records.encode(rec(3)))])),
        return_exceptions=True,
    )
    assert isinstance(results[5], KeyTooLongError), results[5]
    assert "longer than the storage takes (511 bytes" in str(results[5])
    assert not any(isinstance(r, BaseException) for i, r in enumerate(results) if i != 5)
    assert all(storage.get(f"ok{i}".encode()) == rec(i + 1) for i in range(5))
    assert storage.get(b"ok-raw") == rec(3) and storage.get(long_key) is None


async def test_full_map_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    s = Storage(str(tmp_path / "small"), map_size=1 << 20)
    try:
        big = b"x" * (600 << 10)
        await s.write(put(b"one", rec(1, big)))
        with pytest.raises(StorageFullError, match="map size"):
            await s.write(put(b"two", rec(2, big)))
        await s.write(put(b"small", rec(3, b"fits")))  # still writable after the refusal
        assert s.get(b"small") == rec(3, b"fits")
        assert s.get(b"two") is None
    finally:
        s.close()


async def test_ttl_and_tombstone_indexes(storage: Storage) -> None:
    await storage.write(put(b"t", rec(1, expires_ms=500)))
    await storage.write(put(b"d", rec(2, tombstone=True)))

    def due(wt: WriteTxn) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        return wt.due("expiry", 1000, 10), wt.due("tombs", 1000, 10)

    assert await storage.write(due) == ([(500, b"t")], [(2, b"d")])
    await storage.write(put(b"t", rec(3)))  # overwrite without TTL drops the index entry
    await storage.write(put(b"d", rec(4)))  # resurrect drops the tombstone entry
    assert await storage.write(due) == ([], [])


def test_reads_release_reader_slots(storage: Storage) -> None:
    for i in range(5000):
        storage.get(f"missing{i}".encode())
    assert storage.stats().readers_used <= 2


@pytest.mark.parametrize("runs", [(64, 1024), (1, 1), (1, 2), (3, 5), (500, 500)])
async def test_snapshot_gives_a_partitions_rows_in_batches_of_about_the_bytes_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: tuple[int, int]
) -> None:
    """Every row of the partition and none of its neighbours', in key order, in
    lists of at least `batch_bytes` (key + record + 8 bytes a row) and under
    twice that before their last row, the last list less; the first and last
    partitions, an empty one between, and a value larger than a batch among
    them. The rows are read in runs (`_FIRST_RUN` doubling up to `_RUN`): the
    node's, runs so short that lists and partitions end at every place in
    one, and runs too long to join a list whole (cut after the row that fills
    the list)."""
    monkeypatch.setattr(engine, "_FIRST_RUN", runs[0])
    monkeypatch.setattr(engine, "_RUN", runs[1])
    part_of = partitioner(4)
    storage = Storage(str(tmp_path / "db"), map_size=64 << 20, partitions=4)
    try:
        rng = random.Random(3)
        items = [
            (f"s{i}".encode(), rec(i + 1, rng.randbytes(rng.randrange(200)))) for i in range(600)
        ]
        items = [(k, r) for k, r in items if part_of(k) != 2]  # partition 2 stays empty
        big = next(k for k in (f"big{i}".encode() for i in range(100)) if part_of(k) == 3)
        items.append((big, rec(999, b"x" * 5000)))
        for key, r in items:
            await storage.write(put(key, r))
        for part in range(4):
            want = [(k, records.encode(r)) for k, r in sorted(items) if part_of(k) == part]
            assert (part == 2) == (not want)
            fingerprint, rows = storage.snapshot(part, 1000)
            batches = list(rows)
            rows.close()
            assert fingerprint == storage.fingerprint(part)
            assert [row for batch in batches for row in batch] == want
            sizes = [[len(k) + len(raw) + 8 for k, raw in batch] for batch in batches]
            assert all(sum(batch) >= 1000 for batch in sizes[:-1])
            assert all(sum(batch[:-1]) < 2000 for batch in sizes)
            assert all(sizes)
        assert any(len(raw) > 1000 for k, raw in want)  # partition 3 has the big value
        _, rows = storage.snapshot(1, 1000)  # closed before it is read
        rows.close()
        assert storage.stats().readers_used <= 2
    finally:
        storage.close()


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"\x00\x00", b"\x00\x01"),
        (b"\x00\xff", b"\x01"),
        (b"\x12\x34", b"\x12\x35"),
        (b"\xfe\xff", b"\xff"),
        (b"\xff\xff", None),  # the last partition of 65,536: nothing after it
    ],
)
def test_prefix_end_is_the_first_key_past_the_prefix(prefix: bytes, end: bytes | None) -> None:
    assert engine._prefix_end(prefix) == end
    for key in (prefix, prefix + b"\xff" * 3, prefix + b"z"):
        assert end is None or key < end
    if end is not None:
        assert not end.startswith(prefix)


@pytest.mark.slow
async def test_packed_apply_matches_decoded_apply(tmp_path: Path) -> None:
    """A peer's packed records (`apply_raw`, and `apply_raw_many` for a bulk batch)
    land exactly as decoded ones (`apply_lww`):
    same bytes, previous records, digests, TTL/tombstone indexes and clock floor."""
    rng = random.Random(7)
    ops = []
    for _ in range(600):
        key = (
            rng.choice([b"a", b"b", b"{t}x", b"{t}y", b"\xc3\xa9"])
            + str(rng.randrange(40)).encode()
        )
        node = rng.choice(["n1", "n2", "\u00e9"])
        ts = rng.randrange(1, 60)
        r = Record(
            Version(ts, node),
            rng.randbytes(rng.randrange(4)),
            tombstone=rng.random() < 0.2,
            expires_ms=rng.choice([0, 0, ts * 10]),
        )
        ops.append((key, r))
    decoded = Storage(str(tmp_path / "decoded"), map_size=64 << 20)
    packed = Storage(str(tmp_path / "packed"), map_size=64 << 20)
    bulk = Storage(str(tmp_path / "bulk"), map_size=64 << 20)  # apply_raw_many, 50 at a time
    # apply_raw_many of runs without a repeated key: the getmulti/putmulti path
    unique = Storage(str(tmp_path / "unique"), map_size=64 << 20)
    try:
        wanted = []
        for key, r in ops:
            want = await decoded.write(put(key, r))
            wanted.append(None if want is None else records.encode(want))
            raw = records.encode(r)
            got = await packed.write(lambda wt, k=key, raw=raw: wt.apply_raw(k, raw))
            assert (None if got is None else records.decode(got)) == want
        for start in range(0, len(ops), 50):
            chunk = [(k, records.encode(r)) for k, r in ops[start : start + 50]]
            got = await bulk.write(lambda wt, chunk=chunk: wt.apply_raw_many(chunk))
            assert got == wanted[start : start + 50]
        start, runs = 0, 0
        while start < len(ops):
            seen: set[bytes] = set()
            end = start
            while end < len(ops) and ops[end][0] not in seen:
                seen.add(ops[end][0])
                end += 1
            run = [(k, records.encode(r)) for k, r in ops[start:end]]
            got = await unique.write(lambda wt, run=run: wt.apply_raw_many(run))
            assert got == wanted[start:end]
            start, runs = end, runs + 1
        assert runs < len(ops) // 5  # runs of several keys, so the bulk path ran
        everything = {"inclusive": True, "limit": 10_000}
        assert packed.scan(b"", **everything) == decoded.scan(b"", **everything)
        assert bulk.scan(b"", **everything) == decoded.scan(b"", **everything)
        assert unique.scan(b"", **everything) == decoded.scan(b"", **everything)
        assert packed.bucket_digests() == decoded.bucket_digests() == bulk.bucket_digests()
        assert unique.bucket_digests() == decoded.bucket_digests()
        assert unique.bucket_digests() == unique._rebuild_digests()
        assert packed.hlc_floor() == decoded.hlc_floor() == bulk.hlc_floor()
        assert unique.hlc_floor() == decoded.hlc_floor()

        def indexes(wt: WriteTxn) -> object:
            return wt.due("expiry", 1 << 62, 10_000), wt.due("tombs", 1 << 62, 10_000)

        assert await packed.write(indexes) == await decoded.write(indexes)
        assert await bulk.write(indexes) == await decoded.write(indexes)
        assert await unique.write(indexes) == await decoded.write(indexes)
        keys = [*sorted({k for k, _ in ops}), b"missing"]
        stored = [decoded.get(k) for k in keys]
        assert packed.get_raw_many(keys) == [
            None if r is None else records.encode(r) for r in stored
        ]
    finally:
        decoded.close()
        packed.close()
        bulk.close()
        unique.close()


_WHOLE = records.encode(rec(1))  # header, then the member id "n1", then b"v"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        _WHOLE[: records.HEADER_SIZE - 1],  # a short header
        _WHOLE[: records.HEADER_SIZE + 1],  # cut inside the member id
        _WHOLE[: records.HEADER_SIZE - 1] + b"\x02\xff\xfe",  # member id not UTF-8
    ],
)
def test_malformed_packed_records_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        records.header(raw)


@pytest.mark.parametrize(
    ("sizes", "taken", "ended"),
    [
        ([], [], True),  # nothing at all
        ([100, 5], [100, 5], True),  # a small partition and its end frame: one hop
        ([FRAME_BYTES, 100, 5], [FRAME_BYTES], False),  # a whole frame goes alone
        ([FRAME_BYTES // 2, FRAME_BYTES // 2, 5], [FRAME_BYTES // 2] * 2, False),
        ([FRAME_BYTES - 1, 5], [FRAME_BYTES - 1, 5], False),  # a frame's worth: the end is not seen
    ],
)
def test_next_frames_takes_frames_until_a_frames_worth_or_the_end(
    sizes: list[int], taken: list[int], ended: bool
) -> None:
    gen = iter([b"x" * n for n in sizes])
    out, done = next_frames(gen)
    assert [len(f) for f in out] == taken and done is ended
    assert [len(f) for f in gen] == sizes[len(taken) :]  # the rest is left for the next hop
