"""The write-ahead log's format and segments, on real files in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv_node.storage import wal

mutation = st.tuples(
    st.integers(0, 63),
    st.binary(max_size=64),
    st.one_of(st.none(), st.binary(max_size=256)),
)
mutations = st.lists(mutation, max_size=40)
put_many = st.tuples(
    st.integers(0, 63),
    st.lists(st.tuples(st.binary(max_size=64), st.binary(max_size=256)), max_size=20),
)


@given(mutations)
def test_a_record_decodes_to_the_changes_it_was_made_of(muts: list[wal.Mutation]) -> None:
    assert wal.decode(wal.encode(list(muts))) == muts


@given(st.lists(st.one_of(mutation, put_many), max_size=30))
def test_puts_logged_as_one_change_decode_to_each_put_in_order(
    changes: list[wal.Change],
) -> None:
    """A bulk write's `PutMany` among single changes: the same mutations, in order."""
    flat: list[wal.Mutation] = []
    for change in changes:
        if len(change) == 2:
            db, pairs = change
            flat += [(db, key, value) for key, value in pairs]
        else:
            flat.append(change)
    assert wal.decode(wal.encode(changes)) == flat


@given(mutations.filter(bool), st.data())
def test_a_cut_record_is_an_error_not_a_guess(
    muts: list[wal.Mutation], data: st.DataObject
) -> None:
    payload = wal.encode(muts)
    cut = data.draw(st.integers(1, len(payload) - 1)) if len(payload) > 1 else 0
    if cut:
        try:
            decoded = wal.decode(payload[:cut])
        except wal.WalError:
            return
        # a cut that falls between two changes decodes to a prefix of them
        assert decoded == muts[: len(decoded)]


def test_frames_stop_at_a_torn_or_corrupt_frame() -> None:
    good = [wal.frame(b"one"), wal.frame(b"two"), wal.frame(b"three")]
    data = wal.MAGIC + b"".join(good)
    assert wal.frames(data) == ([b"one", b"two", b"three"], len(data))
    torn = data[:-2]
    payloads, end = wal.frames(torn)
    assert payloads == [b"one", b"two"]
    assert end == len(wal.MAGIC) + len(good[0]) + len(good[1])
    flipped = bytearray(data)
    flipped[len(wal.MAGIC) + len(good[0]) + 9] ^= 0xFF  # inside "two"'s payload
    assert wal.frames(bytes(flipped))[0] == [b"one"]
    assert wal.frames(b"not a log")[0] == []


def test_segments_rotate_replay_in_order_and_drop(tmp_path: Path) -> None:
    log = wal.Wal(str(tmp_path))
    first = log.rotate()
    log.append_many([b"a"], sync=True)
    log.append_many([b"b"], sync=False)
    second = log.rotate()
    assert second == first + 1
    log.append_many([b"c"], sync=True)
    assert list(log.records(first)) == [b"a", b"b", b"c"]
    assert list(log.records(second)) == [b"c"]
    log.drop_before(second)
    assert log.segments() == [second]
    log.close()
    reopened = wal.Wal(str(tmp_path))
    assert reopened.rotate() == second + 1  # never reuses a number on disk
    reopened.close()


def test_replay_stops_at_the_first_torn_frame_across_segments(tmp_path: Path) -> None:
    log = wal.Wal(str(tmp_path))
    first = log.rotate()
    log.append_many([b"a"], sync=True)
    log.append_many([b"lost"], sync=True)
    log.rotate()
    log.append_many([b"after"], sync=True)
    log.close()
    path = tmp_path / f"wal-{first:016d}.log"
    path.write_bytes(path.read_bytes()[:-1])
    # "after" follows a record that is gone: replaying it alone would make
    # a state that never existed
    assert list(wal.Wal(str(tmp_path)).records(first)) == [b"a"]


def test_after_a_failed_write_nothing_more_is_appended(tmp_path: Path) -> None:
    log = wal.Wal(str(tmp_path))
    seq = log.rotate()
    log.append_many([b"kept"], sync=True)
    fd = log._fd
    assert fd is not None
    os.close(fd)
    log._fd = os.open(os.devnull, os.O_RDONLY)  # the next write fails (EBADF)
    with pytest.raises(OSError, match="write-ahead log failed"):
        log.append_many([b"x"], sync=True)
    assert log.failed is not None
    with pytest.raises(OSError, match="restart the node"):
        log.append_many([b"y"], sync=True)
    log.close()
    assert list(wal.Wal(str(tmp_path)).records(seq)) == [b"kept"]
