"""Reading one partition (or one bucket of it) a page at a time, here or from a peer.

Anti-entropy and rebalance streaming both walk a partition's records in key
order, a page of `PAGE` records at a time: from local storage, or from a peer
through its `bucket` call (`peer_service`), which answers with pages of the
same size and says whether more may follow. One helper and one page size
serve all of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from ringkv_node.model import wire
from ringkv_node.model.records import Record
from ringkv_node.storage import Storage

__all__ = ["PAGE", "local_pages", "peer_pages"]

PAGE = 1000  # records a page, here and on the wire

Page = list[tuple[bytes, Record]]


def local_pages(storage: Storage, part: int, bucket: int | None = None) -> Iterator[Page]:
    """This replica's records of `part` (one `bucket` of it, or all), page by page;
    each page is one short read transaction."""
    after = b""
    while True:
        page = storage.partition_records(part, after=after, bucket=bucket, limit=PAGE)
        if page:
            yield page
        if len(page) < PAGE:
            return
        after = page[-1][0]


async def peer_pages(
    call: Callable[[str, str, Any], Awaitable[Any]], peer: str, part: int, bucket: int | None
) -> AsyncIterator[Page]:
    """`peer`'s records of `part` (one `bucket` of it, or all) through its `bucket`
    call, page by page (`call` is `Transport.call`)."""
    after = b""
    while True:
        doc = await call(peer, "bucket", {"partition": part, "bucket": bucket, "after": after})
        page = wire.decode_records(doc["records"])
        if page:
            yield page
        if not doc["more"] or not page:
            return
        after = page[-1][0]
