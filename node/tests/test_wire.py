"""Peer-link frames: a length, then msgpack; split anywhere, refused when foreign."""

from __future__ import annotations

import pytest

from ringkv_node.model.wire import MAX_FRAME, FrameError, frame, take_frames


def test_frames_come_out_whole_however_the_bytes_are_split() -> None:
    docs = [{"id": 1, "call": "read", "doc": [b"k"]}, {"id": 2, "ok": None}, [b"\x00" * 70_000]]
    data = b"".join(frame(d) for d in docs)
    for cut in (1, 3, 4, 5, 17, 70_010):
        buf, got = bytearray(), []
        for i in range(0, len(data), cut):
            buf += data[i : i + cut]
            got += take_frames(buf)
        assert got == docs
        assert buf == b""


def test_an_incomplete_frame_stays_in_the_buffer() -> None:
    data = frame({"id": 7})
    buf = bytearray(data[:-1])
    assert take_frames(buf) == []
    assert buf == data[:-1]


def test_an_oversized_length_is_refused_before_the_body_arrives() -> None:
    buf = bytearray((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError, match="limit"):
        take_frames(buf)


def test_a_body_that_is_not_msgpack_is_refused() -> None:
    buf = bytearray(b"\x00\x00\x00\x02\xc1\xc1")  # 0xc1 is never used by msgpack
    with pytest.raises(FrameError, match="not msgpack"):
        take_frames(buf)
