"""Membership change as a resumable plan: what to do next, from what nodes report.

A rebalance moves a cluster from ring E-1 to ring E in steps, each idempotent
on the nodes: *join* (every node of either ring takes ring E as joining, and
writes go to old and new owners), *stream* (new owners copy the partitions
they gain, then catch up), *commit* (ring E becomes the ring everywhere; old
owners drop what they lost after a safety delay). `next_step` looks only at
what the nodes say now, so a driver that crashed resumes by running again.
Pure: no I/O (the operator and `ringkv local` share it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ringkv.ring import Member, Ring, rebalance

__all__ = [
    "ImpossibleChangeError",
    "NodeView",
    "Step",
    "UnchangedError",
    "next_step",
    "plan",
    "refusal",
    "target_from_views",
]


class UnchangedError(ValueError):
    """`plan`: the members are the current ring's; there is nothing to rebalance."""


class ImpossibleChangeError(ValueError):
    """`plan`: the ring cannot have these members (fewer than N, none, duplicates)."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """What one node reports (GET /admin/v1/rebalance), or that it did not answer."""

    id: str
    reachable: bool
    epoch: int = 0
    pending_epoch: int | None = None
    streaming: bool = False
    in_sync: bool = False

    @classmethod
    def from_progress(cls, node_id: str, doc: Mapping[str, Any]) -> NodeView:
        return cls(
            node_id,
            True,
            int(doc["epoch"]),
            doc.get("pending_epoch"),
            bool(doc.get("streaming")),
            bool(doc.get("in_sync")),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """`action` is join, stream, commit, wait or done; `nodes` the ones to ask."""

    action: str
    nodes: tuple[str, ...] = ()
    reason: str = ""


def refusal(current: Ring, members: Iterable[Member]) -> str | None:
    """Why `current` cannot move to `members`, in words; None when it can."""
    ids = [m.id for m in members]
    if not ids:
        return "a ring needs at least one member"
    if len(set(ids)) != len(ids):
        return "the member list names a member twice"
    n = current.replication_factor
    if len(ids) < n:
        return (
            f"the ring would have {len(ids)} member{'s' * (len(ids) != 1)}, fewer than its "
            f"replication factor N={n} (every key is kept on {n} members)"
        )
    return None


def plan(current: Ring, members: Iterable[Member]) -> Ring:
    """The ring to move to: balanced, minimal movement, epoch + 1.

    Raises `ImpossibleChangeError` when the members cannot hold the ring
    (`refusal`), and `UnchangedError` when they are the current ring's.
    """
    roster = list(members)
    reason = refusal(current, roster)
    if reason is not None:
        raise ImpossibleChangeError(reason)
    target = rebalance(current, roster)
    if target.owner_table == current.owner_table and {m.id for m in target.members} == {
        m.id for m in current.members
    }:
        raise UnchangedError("the membership is unchanged: nothing to rebalance")
    return target


def participants(old: Ring, target: Ring) -> tuple[str, ...]:
    return tuple(sorted(set(old.member_ids) | set(target.member_ids)))


def next_step(target: Ring, views: Mapping[str, NodeView]) -> Step:
    """The next action towards `target` (epoch E), given every participant's view."""
    epoch = target.epoch
    down = sorted(v.id for v in views.values() if not v.reachable)
    if down:
        return Step("wait", tuple(down), f"waiting for {', '.join(down)} to answer")
    ahead = [v.id for v in views.values() if v.epoch > epoch]
    if ahead:
        raise ValueError(f"{', '.join(ahead)} already moved past epoch {epoch}")
    other = [
        v.id for v in views.values() if v.pending_epoch is not None and v.pending_epoch != epoch
    ]
    if other:
        raise ValueError(f"{', '.join(other)} hold another joining ring; abort it first")
    committed = [v.id for v in views.values() if v.epoch == epoch]
    if len(committed) == len(views):
        return Step("done", (), f"ring epoch {epoch} is committed everywhere")
    if committed:  # the commit started: finish it everywhere
        rest = tuple(sorted(v.id for v in views.values() if v.epoch != epoch))
        return Step("commit", rest, f"finishing the switch to ring epoch {epoch}")
    stale = [v.id for v in views.values() if v.epoch < epoch - 1]
    if stale:
        raise ValueError(f"{', '.join(stale)} are more than one epoch behind")
    not_joined = tuple(sorted(v.id for v in views.values() if v.pending_epoch != epoch))
    if not_joined:
        return Step(
            "join",
            not_joined,
            f"giving {', '.join(not_joined)} ring epoch {epoch} to join: "
            "writes go to old and new owners from now on",
        )
    not_streaming = tuple(sorted(v.id for v in views.values() if not v.in_sync and not v.streaming))
    if not_streaming:
        return Step(
            "stream", not_streaming, "asking the new owners to copy the partitions they gain"
        )
    if all(v.in_sync for v in views.values()):
        return Step(
            "commit",
            tuple(sorted(views)),
            f"every new owner is in sync: switching every node to ring epoch {epoch}",
        )
    return Step("wait", (), "new owners are copying the partitions they gain")


def target_from_views(docs: Mapping[str, Mapping[str, Any]]) -> Ring | None:
    """A joining ring some node already holds (a driver resuming after a crash)."""
    for doc in docs.values():
        pending = doc.get("pending_ring")
        if pending:
            return Ring.from_dict(pending)
    return None
