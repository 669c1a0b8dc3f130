"""The backup format (pure): manifests, parts, the replicas' merge, and what is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard

from ringkv.backupformat import (
    InvalidBackupError,
    Manifest,
    PartReader,
    PartWriter,
    blocks,
    check_counts,
    merge_newest,
    part_name,
)
from ringkv.packed import fields, is_live, newer, pack
from ringkv.ring import partition

Q = 16


def rec(
    ts: int, node: str = "n1", value: bytes = b"v", *, tomb: bool = False, exp: int = 0
) -> bytes:
    return pack(ts, exp, tomb, node.encode(), b"" if tomb else value)


def rows(n: int) -> list[tuple[int, bytes, bytes]]:
    """n keys in (partition, key) order with a record each."""
    keys = sorted((partition(f"k{i}", Q), f"k{i}".encode()) for i in range(n))
    return [(p, k, rec(1000 + i)) for i, (p, k) in enumerate(keys)]


def write(
    data: list[tuple[int, bytes, bytes]], part_size: int, level: int = 1
) -> tuple[list[bytes], Manifest]:
    writer = PartWriter(part_size, level)
    parts, infos = [], []
    counts = [0] * Q
    for p in range(Q):
        mine = [(k, r) for q, k, r in data if q == p]
        counts[p] = len(mine)
        for block, count in blocks(mine, block_bytes=200):
            done = writer.add(p, block, count)
            if done:
                parts.append(done[0])
                infos.append(done[1])
    if not writer.empty:
        data_, info = writer.finish()
        parts.append(data_)
        infos.append(info)
    manifest = Manifest("c", "b-1", 1, 2, "0.1", 1, Q, 3, "quorum", counts, infos)
    return parts, manifest


def read_all(parts: list[bytes], manifest: Manifest) -> list[tuple[bytes, bytes]]:
    out = []
    counts: dict[int, int] = {}
    for data, info in zip(parts, manifest.parts, strict=True):
        reader = PartReader(info, data, manifest.partitions)
        for block in reader.block_rows():
            out += [(k, r) for k, r in block]
        for p, n in reader.counts.items():
            counts[p] = counts.get(p, 0) + n
    check_counts(manifest, counts)
    return out


def test_round_trip_through_bounded_parts() -> None:
    data = rows(500)
    parts, manifest = write(data, part_size=4000)
    assert len(parts) > 3
    assert all(info.raw_size < 4000 + 400 for info in manifest.parts)  # a part and one block
    assert [p.name for p in manifest.parts] == [part_name(i) for i in range(len(parts))]
    assert read_all(parts, manifest) == [(k, r) for _, k, r in data]
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest and again.records == 500


def forged_part(blocks_: list[list[list[bytes]]], partitions: tuple[int, int]) -> tuple[Any, bytes]:
    """A part of these blocks as they are, and its manifest entry."""
    payload = b"".join(msgpack.packb(b, use_bin_type=True) for b in blocks_)
    blob = zstandard.ZstdCompressor().compress(payload)
    records = sum(map(len, blocks_))
    _, manifest = write(rows(1), part_size=10**6)
    info = type(manifest.parts[0])(
        "part-000000.zst", len(blob), hashlib.sha256(blob).hexdigest(), len(payload),
        records, *partitions,
    )  # fmt: skip
    return info, blob


def test_partition_blocks_name_the_partition_of_each_block() -> None:
    data = rows(300)
    parts, manifest = write(data, part_size=10**6)
    seen = []
    for blob, info in zip(parts, manifest.parts, strict=True):
        for part, block in PartReader(info, blob, Q).partition_blocks():
            assert {partition(k, Q) for k, _ in block} == {part}
            seen += [(part, k, r) for k, r in block]
    assert seen == data
    # A block whose rows are in two partitions (in order, so readable) is -1.
    mixed = [[k, r] for _, k, r in data if _ in (2, 3)]
    assert {partition(k, Q) for k, _ in mixed} == {2, 3}
    info, blob = forged_part([mixed], (2, 3))
    assert [p for p, _ in PartReader(info, blob, Q).partition_blocks()] == [-1]
    info, blob = forged_part([[], mixed[:1]], (2, 2))  # an empty block, then one
    assert [p for p, _ in PartReader(info, blob, Q).partition_blocks()] == [-1, 2]


def test_any_zstandard_level_reads_back_the_same_records() -> None:
    data = rows(2000)
    fast, fast_manifest = write(data, part_size=1 << 20, level=1)
    small, small_manifest = write(data, part_size=1 << 20, level=19)
    assert read_all(fast, fast_manifest) == read_all(small, small_manifest)
    assert read_all(small, small_manifest) == [(k, r) for _, k, r in data]
    assert sum(map(len, small)) < sum(map(len, fast))
    for level in (0, 20):
        with pytest.raises(ValueError, match=f"zstandard level must be 1 to 19, not {level}"):
            PartWriter(1000, level)


def test_merge_keeps_every_key_once_with_its_newest_record() -> None:
    a = [(b"a", rec(5)), (b"b", rec(5, "n1")), (b"d", rec(9, tomb=True))]
    b = [(b"b", rec(5, "n2")), (b"c", rec(1)), (b"d", rec(7)), (b"e", rec(2))]
    merged = list(merge_newest(a, b))
    assert [k for k, _ in merged] == [b"a", b"b", b"c", b"d", b"e"]
    assert merged[1][1] == rec(5, "n2")  # same timestamp: the higher member id wins
    assert merged[3][1] == rec(9, tomb=True)  # a newer delete wins over an older value
    assert list(merge_newest(merged, [])) == merged == list(merge_newest([], merged))


def test_packed_records() -> None:
    assert fields(rec(7, "n3", exp=99)) == (7, 99, False, b"n3")
    assert newer(rec(8), rec(7, "zz")) and not newer(rec(7), rec(7))
    assert is_live(rec(1), 10) and not is_live(rec(1, exp=5), 10) and not is_live(None, 0)
    assert not is_live(rec(1, tomb=True), 0)
    with pytest.raises(ValueError, match="shorter"):
        fields(b"\x00" * 5)


def corrupt(parts: list[bytes], manifest: Manifest) -> list[bytes]:
    data = bytearray(parts[1])
    data[10] ^= 1
    return [parts[0], bytes(data), *parts[2:]]


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (corrupt, "SHA-256 does not match"),
        (lambda parts, m: [parts[0][:-3], *parts[1:]], "truncated"),
        (lambda parts, m: parts[1:] + parts[:1], "bytes; the manifest says"),
    ],
    ids=["corrupt", "truncated", "swapped"],
)
def test_damaged_parts_are_refused(damage: Any, words: str) -> None:
    parts, manifest = write(rows(300), part_size=3000)
    with pytest.raises(InvalidBackupError, match=words):
        read_all(damage(parts, manifest), manifest)


def test_records_out_of_order_are_refused() -> None:
    data = rows(40)
    _, manifest = write(data, part_size=10**6)
    info = manifest.parts[0]
    pairs = [[k, r] for _, k, r in data]
    pairs[3], pairs[4] = pairs[4], pairs[3]
    payload = msgpack.packb(pairs, use_bin_type=True)
    blob = zstandard.ZstdCompressor().compress(payload)
    forged = type(info)(
        info.name, len(blob), hashlib.sha256(blob).hexdigest(), len(payload),
        info.records, info.first_partition, info.last_partition,
    )  # fmt: skip
    with pytest.raises(InvalidBackupError, match="out of"):
        list(PartReader(forged, blob, Q).block_rows())


def manifest_doc() -> dict[str, Any]:
    _, manifest = write(rows(50), part_size=10**6)
    doc: dict[str, Any] = json.loads(manifest.to_json())
    return doc


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.update(format="other"), "not a ringkv-backup manifest"),
        (lambda d: d.update(format_version=2), "format_version 2"),
        (lambda d: d.update(partitions=12), "power of two"),
        (lambda d: d["partition_records"].pop(), "must list 16 counts"),
        (lambda d: d["partition_records"].__setitem__(0, 99), "its parts hold"),
        (lambda d: d["parts"][0].update(name="x.zst"), "must be named part-00000.zst"),
        (lambda d: d["parts"][0].update(sha256="abc"), "not a SHA-256"),
        (lambda d: d.pop("ring_epoch"), "missing field 'ring_epoch'"),
        (lambda d: d.update(backup_id="../x"), "backup id"),
        (lambda d: d.update(size_bytes=1), "size_bytes does not add up"),
        # past year 9999: `list` and retention failed on it, and it became the
        # "latest" that `prune --keep-last 1` kept over the real newest
        (lambda d: d.update(created_ms=10**15, completed_ms=10**15), "before the year 10000"),
        (lambda d: d.update(completed_ms=0), "times in order"),
        # `backup list` printed it to the terminal as it was
        (lambda d: d.update(cluster="kv\x1b[2J"), "cluster must be printable"),
        (lambda d: d.update(ringkv_version="1\n2"), "ringkv_version must be printable"),
    ],
)
def test_wrong_manifests_are_refused(change: Any, words: str) -> None:
    doc = manifest_doc()
    change(doc)
    with pytest.raises(InvalidBackupError, match=words):
        Manifest.from_json(json.dumps(doc).encode())


def test_manifest_that_is_not_json() -> None:
    with pytest.raises(InvalidBackupError, match="not valid JSON"):
        Manifest.from_json(b"{")


def test_unknown_manifest_fields_are_kept() -> None:
    doc = manifest_doc()
    doc["operator"] = {"kvbackup": "nightly-1"}
    manifest = Manifest.from_json(json.dumps(doc).encode())
    assert json.loads(manifest.to_json())["operator"] == {"kvbackup": "nightly-1"}


def test_drill_digests_count_live_records_only() -> None:
    from ringkv.drill import live_digests
    from ringkv.packed import pack

    live = pack(5, 0, False, b"n1", b"v")
    soon = pack(6, 2_000, False, b"n1", b"v")  # expires at 2 s
    gone = pack(7, 0, True, b"n1", b"")  # a tombstone
    rows = [(0, b"a", live), (0, b"b", soon), (1, b"c", gone), (1, b"d", live)]
    at_1s = live_digests(iter(rows), 2, cut_ms=1_000)
    at_3s = live_digests(iter(rows), 2, cut_ms=3_000)
    assert [c for c, _ in at_1s] == [2, 1] and [c for c, _ in at_3s] == [1, 1]
    assert at_1s[1] == at_3s[1] and at_1s[0] != at_3s[0]
    other = live_digests(iter([(0, b"a", pack(5, 0, False, b"n1", b"w"))]), 2, cut_ms=1_000)
    same_count = live_digests(iter([(0, b"a", live)]), 2, cut_ms=1_000)
    assert other[0][0] == same_count[0][0] and other[0][1] != same_count[0][1]  # value differs


def test_a_manifest_nested_too_deep_is_refused() -> None:
    data = manifest_doc()
    text = json.dumps(data)[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(InvalidBackupError, match="not valid JSON"):
        Manifest.from_json(text.encode())


@pytest.mark.parametrize(
    ("key", "words"),
    [(b"", "key is empty"), (b"\xff\xfe", "not valid UTF-8"), (b"a\x01", "control")],
)
def test_a_key_no_node_would_hold_is_refused(key: bytes, words: str) -> None:
    """`verify` said such a backup verified; its restore then failed part way."""
    info, blob = forged_part([[[key, rec(1)]]], (partition(key, Q), partition(key, Q)))
    with pytest.raises(InvalidBackupError, match=f"part-000000.zst: .*{words}"):
        list(PartReader(info, blob, Q).partition_blocks())


def test_a_backup_of_a_cluster_name_no_manifest_could_hold_is_refused_first(
    tmp_path: Path,
) -> None:
    """Before any node is asked (none listens here) or anything is written."""
    from ringkv.backup import create
    from ringkv.stores import DirStore

    with pytest.raises(ValueError, match="the cluster name must be printable"):
        create(["http://127.0.0.1:9"], "t", DirStore(str(tmp_path)), cluster="kv\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("batch", [0, 10_001])
def test_a_restore_batch_no_node_takes_is_refused_first(tmp_path: Path, batch: int) -> None:
    from ringkv.backup import restore
    from ringkv.stores import DirStore

    with pytest.raises(ValueError, match="a restore batch is 1 to 10000 records"):
        restore(DirStore(str(tmp_path)), None, ["http://127.0.0.1:9"], "t", batch=batch)
