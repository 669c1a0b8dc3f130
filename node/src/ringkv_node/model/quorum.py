"""Quorum arithmetic and merging of replica answers. Pure: no I/O.

The coordinator asks several replicas and must decide what they said
together: how many acknowledgements a level needs, which record is newest,
which replicas are stale (read repair), and how per-replica key listings
merge into one sorted page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ringkv.versions import Version
from ringkv_node.model.records import Record

__all__ = ["ListingEntry", "Page", "merge_pages", "newest", "required_acks", "stale"]


def required_acks(level: str, n: int) -> int:
    """Replica answers a consistency level needs out of `n` owners."""
    if level == "one":
        return 1
    if level == "all":
        return n
    if level == "quorum":
        return n // 2 + 1
    raise ValueError(f"unknown consistency level {level!r}")


def newest(records: Iterable[Record | None]) -> Record | None:
    best: Record | None = None
    for rec in records:
        if rec is not None and (best is None or rec.version > best.version):
            best = rec
    return best


def stale(answers: dict[str, Record | None], winner: Record | None) -> list[str]:
    """Replicas whose answer is older than `winner` and so need a repair."""
    if winner is None:
        return []
    return [
        replica for replica, rec in answers.items() if rec is None or rec.version < winner.version
    ]


@dataclass(frozen=True, slots=True)
class ListingEntry:
    key: bytes
    version: Version
    live: bool


@dataclass(frozen=True, slots=True)
class Page:
    """One replica's sorted listing from the cursor; `full` when it stopped at its limit."""

    entries: Sequence[ListingEntry]
    full: bool


def merge_pages(
    pages: Sequence[Page], limit: int, *, deleted: bool = False
) -> tuple[list[bytes], bytes | None]:
    """Merge replicas' listings: newest version of each key decides if it is live.

    The live keys, or with `deleted` the others: keys whose newest version is
    a tombstone (kept for the grace period) or has expired.

    A replica that returned a full page may hold more keys after its last one,
    so the merged page stops at the smallest such last key (the horizon); the
    next cursor continues from where the merged page stopped.
    """
    horizon: bytes | None = None
    for page in pages:
        if page.full and page.entries:
            last = page.entries[-1].key
            horizon = last if horizon is None or last < horizon else horizon
    best: dict[bytes, ListingEntry] = {}
    for page in pages:
        for entry in page.entries:
            if horizon is not None and entry.key > horizon:
                break
            cur = best.get(entry.key)
            if cur is None or entry.version > cur.version:
                best[entry.key] = entry
    keys = sorted(k for k, e in best.items() if e.live != deleted)
    if len(keys) > limit:
        return keys[:limit], keys[limit - 1]
    if horizon is not None:
        return keys, horizon
    return keys, None
