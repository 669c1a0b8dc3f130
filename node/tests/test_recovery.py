"""Crash recovery of the storage: the log replayed over the last checkpoint.

A child process writes and then dies without closing (`os._exit`: nothing is
flushed or checkpointed on the way out); this process opens what it left.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ringkv.versions import Version
from ringkv_node.model.records import Record
from ringkv_node.storage import Storage, StorageError, WriteTxn, checkpoint
from ringkv_node.storage import checkpointer as checkpointer_mod

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from ringkv.versions import Version
    from ringkv_node.storage import checkpointer, engine as st
    from ringkv_node.model.records import Record, encode

    path, fsync, rounds, keys = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
    bulk = sys.argv[5] == "bulk"  # apply_raw_many, 100 keys a write (one PutMany each)
    checkpointer.CHECKPOINT_INTERVAL_S = 3600.0  # none after the one taken at open
    checkpointer.CHECKPOINT_GROWTH_SHARE = 1.0

    def put(key, rec):
        return lambda wt: wt.apply_lww(key, rec)[0]

    async def main():
        s = st.Storage(path, map_size=256 << 20, fsync=fsync)
        ts = s.hlc_floor()
        for r in range(rounds):
            if bulk:
                chunks = []
                for start in range(0, keys, 100):
                    items = []
                    for i in range(start, min(start + 100, keys)):
                        ts += 1
                        rec = Record(Version(ts, "n1"), f"r{r}-{i}".encode())
                        items.append((b"k%d" % i, encode(rec)))
                    chunks.append(s.write(lambda wt, items=items: wt.apply_raw_many(items)))
                await asyncio.gather(*chunks)
                continue
            batch = []
            for i in range(keys):
                ts += 1
                value = f"r{r}-{i}".encode()
                batch.append(s.write(put(b"k%d" % i, Record(Version(ts, "n1"), value))))
                if len(batch) == 64:
                    await asyncio.gather(*batch)
                    batch = []
            await asyncio.gather(*batch)
        print(ts, flush=True)
        os._exit(0)

    asyncio.run(main())
    """
)


def crash_after_writing(
    path: Path, *, rounds: int, keys: int, fsync: bool = True, mode: str = "single"
) -> int:
    """Run the child; the last version it wrote (`mode` "bulk": through `apply_raw_many`)."""
    flag = "1" if fsync else "0"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), flag, str(rounds), str(keys), mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(out.stdout.strip())


def values(s: Storage, keys: int) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    for i in range(keys):
        rec = s.get(b"k%d" % i)
        out[b"k%d" % i] = None if rec is None else rec.value
    return out


def expected(round_: int, keys: int) -> dict[bytes, bytes | None]:
    return {b"k%d" % i: f"r{round_}-{i}".encode() for i in range(keys)}


def seed(path: Path, keys: int) -> None:
    """A store holding round "a" of every key, closed cleanly (a checkpoint)."""

    async def fill() -> None:
        s = Storage(str(path), map_size=256 << 20)
        try:
            writes = []
            for i in range(keys):
                rec = Record(Version(i + 1, "n1"), b"a%d" % i)
                writes.append(s.write(lambda wt, k=b"k%d" % i, r=rec: wt.apply_lww(k, r)[0]))
            await asyncio.gather(*writes)
        finally:
            s.close()

    asyncio.run(fill())


@pytest.mark.parametrize("mode", ["single", "bulk"])
@pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "async"])
def test_every_write_survives_a_crash_between_checkpoints(
    tmp_path: Path, fsync: bool, mode: str
) -> None:
    db = tmp_path / "db"
    last = crash_after_writing(db, rounds=3, keys=700, fsync=fsync, mode=mode)
    s = Storage(str(db), map_size=256 << 20, fsync=fsync)
    try:
        assert s.replayed > 0  # what the crash left unsynced came from the log
        assert values(s, 700) == expected(2, 700)
        assert s.hlc_floor() == last
        assert s.bucket_digests() == s._rebuild_digests()
    finally:
        s.close()
    again = Storage(str(db), map_size=256 << 20)  # closed cleanly: nothing to replay
    try:
        assert again.replayed == 0
        assert values(again, 700) == expected(2, 700)
    finally:
        again.close()


@pytest.mark.slow
def test_the_checkpointed_snapshot_outlives_the_writes_after_it(tmp_path: Path) -> None:
    """The worst case of a power loss: every page written since the checkpoint
    reached the disk, but the log did not. Rolling back to the checkpoint must
    still find its snapshot whole, though 20 rounds of overwrites came after."""
    keys = 1000
    db = tmp_path / "db"
    seed(db, keys)
    crash_after_writing(db, rounds=20, keys=keys)
    rolled_back = tmp_path / "rolled-back"
    shutil.copytree(db, rolled_back)
    shutil.rmtree(rolled_back / "wal")
    s = Storage(str(rolled_back), map_size=256 << 20)
    try:
        assert s.replayed == 0
        assert values(s, keys) == {b"k%d" % i: b"a%d" % i for i in range(keys)}
        assert s.stats().entries == keys
        assert len(s.scan(b"", inclusive=True, limit=2 * keys)) == keys  # every page readable
    finally:
        s.close()


def test_torn_meta_pages_are_rolled_back_and_the_log_replayed(tmp_path: Path) -> None:
    keys = 500
    db = tmp_path / "db"
    seed(db, keys)
    crash_after_writing(db, rounds=5, keys=keys)
    with open(db / "data.mdb", "r+b") as f:  # both meta pages torn by the power loss
        f.write(os.urandom(8192))
    s = Storage(str(db), map_size=256 << 20)
    try:
        assert values(s, keys) == expected(4, keys)
    finally:
        s.close()


async def test_checkpoints_drop_the_log_they_cover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpointer_mod, "CHECKPOINT_INTERVAL_S", 0.0)
    s = Storage(str(tmp_path / "db"), map_size=64 << 20)
    try:
        for i in range(200):
            await s.write(put_op(b"c%d" % i, Record(Version(i + 1, "n1"), b"v")))
        wal = s._wal
        deadline = time.monotonic() + 10
        while s.checkpoints.running() or len(wal.segments()) > 2:
            assert time.monotonic() < deadline, wal.segments()
            await asyncio.sleep(0.01)
        assert wal.seq > 3  # many checkpoints, each a new segment
    finally:
        s.close()
    assert Storage(str(tmp_path / "db"), map_size=64 << 20).stats().entries == 200


def put_op(key: bytes, rec: Record):  # type: ignore[no-untyped-def]
    def op(wt: WriteTxn) -> Record | None:
        return wt.apply_lww(key, rec)[0]

    return op


def test_a_checkpoint_file_is_kept_whole_or_refused(tmp_path: Path) -> None:
    page = 4096
    metas = bytearray(2 * page)
    metas[144:152] = (7).to_bytes(8, "little")
    metas[page + 144 : page + 152] = (8).to_bytes(8, "little")
    ckpt = checkpoint.Checkpoint(page, 8, 3, bytes(metas))
    assert checkpoint.meta_txnid(ckpt.metas, page) == 8
    assert checkpoint.load(str(tmp_path)) is None
    checkpoint.save(str(tmp_path), ckpt)
    assert checkpoint.load(str(tmp_path)) == ckpt
    path = tmp_path / checkpoint.FILE
    data = bytearray(path.read_bytes())
    data[40] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        checkpoint.load(str(tmp_path))
    path.write_bytes(bytes(data[:10]))
    with pytest.raises(checkpoint.CheckpointError, match="truncated"):
        checkpoint.load(str(tmp_path))


def test_a_checkpoint_without_its_data_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "db"
    Storage(str(db), map_size=16 << 20).close()
    (db / "data.mdb").unlink()
    with pytest.raises(StorageError, match="missing"):
        Storage(str(db), map_size=16 << 20)


def test_a_store_from_before_the_log_opens_as_it_was(tmp_path: Path) -> None:
    """Nodes of earlier versions synced LMDB on every commit and kept no log or
    checkpoint: their store is taken as it is, and checkpointed from then on."""
    db = tmp_path / "db"
    seed(db, 50)
    (db / checkpoint.FILE).unlink()
    shutil.rmtree(db / "wal")
    s = Storage(str(db), map_size=16 << 20)
    try:
        assert s.replayed == 0
        assert values(s, 50) == {b"k%d" % i: b"a%d" % i for i in range(50)}
    finally:
        s.close()
    assert checkpoint.load(str(db)) is not None


async def test_a_growing_file_brings_the_next_checkpoint_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages kept for the last checkpoint make the file grow; growth alone (no
    time, little log) starts a checkpoint, which lets them be reused."""
    monkeypatch.setattr(checkpointer_mod, "CHECKPOINT_INTERVAL_S", 3600.0)
    monkeypatch.setattr(checkpointer_mod, "CHECKPOINT_GROWTH_SHARE", 1 / 1024)  # 64 KiB of 64 MiB
    s = Storage(str(tmp_path / "db"), map_size=64 << 20)
    try:
        first = s._wal.seq
        for i in range(40):
            await asyncio.gather(
                *(
                    s.write(
                        put_op(
                            b"g%d-%d" % (i, j), Record(Version(i * 100 + j + 1, "n1"), b"x" * 200)
                        )
                    )
                    for j in range(20)
                )
            )
        deadline = time.monotonic() + 10
        while s.checkpoints.running():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert s._wal.seq > first
    finally:
        s.close()
