"""Per-partition snapshot streams: what a backup reads from each replica.

`GET /admin/v1/snapshot/{partition}` answers one partition's records, packed
(design §7.4's record layout), in key order, from one LMDB read transaction:
a consistent snapshot of that replica's partition. The body is chunked and
made of `wire` frames (a 4-byte big-endian length, then msgpack): each frame
a list of `[key, record]` of at least `FRAME_BYTES` (but the last) and under
twice that before its last row, and a last frame
`{"end": true, "records": n}`, so a stream cut short is told from a short
partition. The node holds one frame at a time, never the partition.

The read transaction is advanced a frame at a time on executor threads (py-lmdb
opens environments with MDB_NOTLS, so a read transaction may move between
threads as long as two never use it at once); the event loop only writes the
frames out, and a slow reader slows the stream, not the node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator

from ringkv_node.model import wire
from ringkv_node.storage import SnapshotRows

__all__ = ["CONTENT_TYPE", "FRAME_BYTES", "frames", "next_frames", "stream_partition"]

CONTENT_TYPE = "application/x-ringkv-frames"
FRAME_BYTES = 256 << 10


def frames(batches: Iterable[list[tuple[bytes, bytes]]]) -> Generator[bytes, None, None]:
    """Each batch of rows (`SnapshotRows`' lists of (key, record), of about
    `FRAME_BYTES`) as a frame, then the end frame with their count. Pure.
    (Rows are packed as they come: a (key, record) tuple is the msgpack
    array `[key, record]`.)"""
    count = 0
    for batch in batches:
        count += len(batch)
        yield wire.frame(batch)
    yield wire.frame({"end": True, "records": count})


def next_frames(gen: Iterator[bytes]) -> tuple[list[bytes], bool]:
    """The frames `gen` gives next, until they hold `FRAME_BYTES` or it ends,
    and whether it ended. Pure. A partition of less than a frame (the usual
    case for a small store's 256) then costs one thread hop, not three (its
    frame, its end frame, the end)."""
    out: list[bytes] = []
    size = 0
    for frame in gen:
        out.append(frame)
        size += len(frame)
        if size >= FRAME_BYTES:
            return out, False
    return out, True


async def stream_partition(rows: SnapshotRows, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Send every frame of a partition's snapshot (`Storage.snapshot`'s rows);
    its transaction closes at the end, or when sending fails (the reader went
    away)."""
    loop = asyncio.get_running_loop()
    gen = frames(rows)
    step: asyncio.Future[tuple[list[bytes], bool]] | None = None
    try:
        ended = False
        while not ended:
            step = loop.run_in_executor(None, next_frames, gen)
            out, ended = await step
            for frame in out:
                await send(frame)
    finally:

        def close(_: object = None) -> None:
            gen.close()
            rows.close()  # also when `gen` never started

        if step is not None and not step.done():  # cancelled while a thread advances it
            step.add_done_callback(close)
        else:
            close()
