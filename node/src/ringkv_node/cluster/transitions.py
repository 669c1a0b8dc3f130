"""Membership change as pure transitions: the decisions, with no I/O (h11-style).

`Membership` (membership.py) keeps the state and does the I/O: it persists
the joining ring, streams, and drops data. Every decision it takes is one of
these functions of the rings and what has been streamed, so each can be
tested as a table (node/tests/test_transitions.py). Refusals raise
`MembershipError`s; the HTTP layer answers them with 409 and their `code`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from ringkv.ring import Ring

__all__ = [
    "MembershipError",
    "RingConflictError",
    "StaleEpochError",
    "check_commit",
    "check_install",
    "check_join",
    "drops_due",
    "expect_pending",
    "gained",
    "progress",
    "stream_done",
    "stream_order",
    "unowned_with_data",
]


class MembershipError(Exception):
    """A membership change this node refuses (HTTP 409 with `code`)."""

    code = "conflict"


class StaleEpochError(MembershipError):
    """The epoch named is not this node's joining (or next) ring."""

    code = "stale_epoch"


class RingConflictError(MembershipError):
    """Another ring is joining, or the ring cannot follow this one."""

    code = "conflict"


def gained(ring: Ring, pending: Ring | None, me: str) -> list[int]:
    """Partitions the joining ring gives `me` that it does not own now."""
    if pending is None:
        return []
    return sorted(pending.partitions_of(me) - ring.partitions_of(me))


def check_install(ring: Ring, new: Ring) -> bool:
    """Whether a ring a peer has (gossip) replaces `ring`: only a newer one of the same Q."""
    if new.epoch <= ring.epoch:
        return False
    if new.partitions != ring.partitions:
        raise RingConflictError("a ring with a different partition count")
    return True


def check_join(ring: Ring, pending: Ring | None, new: Ring) -> str | None:
    """The state to answer when joining `new` is already done ("committed",
    "joining"), or None when `new` is to be installed as the joining ring."""
    if new.partitions != ring.partitions:
        raise RingConflictError("the partition count of a cluster never changes")
    if new.epoch <= ring.epoch:
        if new.epoch == ring.epoch and new == ring:
            return "committed"
        raise StaleEpochError(f"epoch {new.epoch} is not newer than {ring.epoch}")
    if pending is not None:
        if pending == new:
            return "joining"
        raise RingConflictError(
            f"ring epoch {pending.epoch} is already joining; commit or abort it first"
        )
    if new.epoch != ring.epoch + 1:
        raise RingConflictError(f"a joining ring must have epoch {ring.epoch + 1}")
    return None


def expect_pending(pending: Ring | None, epoch: int) -> Ring:
    """The joining ring, which must be of `epoch`."""
    if pending is None or pending.epoch != epoch:
        have = "none" if pending is None else str(pending.epoch)
        raise StaleEpochError(f"no joining ring epoch {epoch} here (joining: {have})")
    return pending


def check_commit(
    ring: Ring, pending: Ring | None, epoch: int, streamed: Collection[int], me: str
) -> Ring | None:
    """The ring to commit, or None when `epoch` is committed already. Refused
    while `me` has not streamed every partition it gains (the commit guard)."""
    if ring.epoch == epoch and pending is None:
        return None
    new = expect_pending(pending, epoch)
    todo = gained(ring, new, me)
    if todo and len(set(streamed) & set(todo)) < len(todo):
        raise RingConflictError("this node has not finished streaming")
    return new


def progress(
    me: str,
    ring: Ring,
    pending: Ring | None,
    streamed: Collection[int],
    streaming: bool,
    errors: Mapping[int, str],
) -> dict[str, Any]:
    """`GET /admin/v1/rebalance`: this node's part of a membership change."""
    todo = gained(ring, pending, me)
    done = len([p for p in todo if p in streamed])
    return {
        "node_id": me,
        "epoch": ring.epoch,
        "pending_epoch": None if pending is None else pending.epoch,
        "streaming": streaming,
        "partitions_to_stream": len(todo),
        "partitions_streamed": done,
        "in_sync": pending is not None and done == len(todo),
        "pending_ring": None if pending is None else pending.to_dict(),
        "errors": {str(p): e for p, e in errors.items()},
    }


def stream_order(owners: Sequence[str], attempt: int, is_down: Callable[[str], bool]) -> list[str]:
    """The owners to copy a gained partition from, in order: each attempt starts
    one further along, and owners marked down go last (all of them, if all are)."""
    shift = attempt % len(owners)
    order = [*owners[shift:], *owners[:shift]]
    return [o for o in order if not is_down(o)] or order


def stream_done(reconciled: int, owners: int, needed: int) -> bool:
    """A gained partition is in sync once reconciled with a read quorum of its
    current owners (or with every other owner, when fewer remain)."""
    return reconciled >= needed or (reconciled > 0 and reconciled == owners)


def unowned_with_data(
    ring: Ring, pending: Ring | None, me: str, digests: Mapping[int, Sequence[int]]
) -> list[int]:
    """Partitions `me` holds data of but owns in neither ring."""
    keep = set(ring.partitions_of(me))
    if pending is not None:
        keep |= pending.partitions_of(me)
    return [p for p, row in digests.items() if p not in keep and any(row)]


def drops_due(
    unowned: Collection[int], since: dict[int, float], now: float, delay_s: float
) -> list[int]:
    """Unowned partitions to drop now: not owned for `delay_s`. Updates `since`
    (when each became unowned): owned-again ones leave it, new ones enter at `now`."""
    for part in list(since):
        if part not in unowned:
            del since[part]
    due = []
    for part in unowned:
        if now - since.setdefault(part, now) >= delay_s:
            due.append(part)
    return due
