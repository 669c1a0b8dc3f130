"""A backup's partitions read ahead: in memory up to a bound, then in a file."""

from __future__ import annotations

import pytest

from ringkv.backup import _Partition


@pytest.mark.parametrize("spool_bytes", [0, 10, 1 << 20])
def test_blocks_come_back_in_order_wherever_they_were_kept(spool_bytes: int) -> None:
    part = _Partition(7, spool_bytes)
    added = [(bytes([i]) * (i + 1), i * 3) for i in range(20)]  # 210 bytes in all
    for block, count in added:
        part.add(block, count)
    assert part.records == sum(c for _, c in added) and part.raw == 210
    assert list(part.blocks()) == added
    assert list(part.blocks()) == added  # read again: the same
    assert (part._file is None) is (spool_bytes >= 210)
    part.close()
    assert part._file is None and list(part.blocks()) == []


def test_the_memory_holds_only_the_first_blocks() -> None:
    part = _Partition(0, 100)
    for _ in range(5):
        part.add(b"x" * 40, 1)  # 40, 80 in memory; 120 on: the file
    assert len(part._memory) == 2 and part._file is not None
    assert [len(b) for b, _ in part.blocks()] == [40] * 5
    part.close()
