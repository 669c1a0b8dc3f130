"""What a backup does when an owner refuses a partition's snapshot because the ring moved.

A node answers `GET /admin/v1/snapshot/{p}?epoch=E` with 409 `stale_epoch`
when its ring is not at epoch E and 409 `not_owner` when it does not own p
(both with its own epoch, `"epoch"` in the JSON body). That is the ring
moving under the backup (a rebalance committed), the backup's view of the
ring being stale, or a node still committing (its ring behind the backup's).
None of these means data is missing, so the backup reads the partition again,
whole, at a newer ring: fetched from the node that refused (it knows the newer
one), or the same ring after a short wait when that node is the one behind.
Each attempt reads every snapshot of the partition at one epoch, so a
partition is always a read quorum of the owners of one ring, merged
last-writer-wins (docs/design.md §7.12). A few attempts, then the backup fails
saying so.

`RingRetry.after_refusal` decides from the refusal, the backup's epoch and the
count alone; `ringkv.backup` fetches rings and sleeps. Pure: no I/O.

**When a backup may begin** (`start_step`). Reading at a ring E is only
sure to find every acknowledged write while no member has committed a newer
ring: a node that has writes to the new ring's owners alone, and a read
quorum of E's owners that have not committed yet would not see them. So the
backup first asks every member (of E and of any joining ring) for its ring
(`GET /admin/v1/rebalance`) and begins only when all of them are at one
epoch. A joining ring that no member has committed yet is no obstacle
(writes then go to a quorum of both rings), as long as every member answers:
one that does not might be the one that committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringkv.errors import ResponseError
from ringkv.rebalance import NodeView

__all__ = [
    "RING_MOVED",
    "Refusal",
    "Retry",
    "RingRetry",
    "Start",
    "refusal_of",
    "start_step",
]

RING_MOVED = ("stale_epoch", "not_owner")  # the 409 codes of the snapshot route


@dataclass(frozen=True, slots=True)
class Refusal:
    """A snapshot refused because of the ring: the code, and the refusing node's
    epoch (None from a node that does not say)."""

    code: str
    node_epoch: int | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Read the partition again: first fetch the ring (`refresh`, from the
    refusing node first), then wait `delay_s`."""

    refresh: bool
    delay_s: float


def refusal_of(exc: ResponseError) -> Refusal | None:
    """The ring refusal `exc` is (409 stale_epoch or not_owner), or None: another error."""
    if exc.status != 409 or exc.code not in RING_MOVED:
        return None
    epoch = exc.body.get("epoch")
    valid = isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0
    return Refusal(exc.code, epoch if valid else None)


@dataclass(frozen=True, slots=True)
class RingRetry:
    """How often a partition is read again after ring refusals, and how long to wait.

    The defaults allow about five seconds of a ring in motion (nodes commit
    one after another within milliseconds; a node behind catches up by gossip
    on its next peer message), far less than a backup takes.
    """

    attempts: int = 6  # reads of one partition, the first included
    backoff_s: float = 0.2
    max_backoff_s: float = 2.0

    def after_refusal(self, refusal: Refusal, ours: int, refused: int) -> Retry | None:
        """What to do after the `refused`-th refusal (1 for the first) of one
        partition read at epoch `ours`; None: give up, the backup fails."""
        if refusal.code not in RING_MOVED or refused >= self.attempts:
            return None
        wait = min(self.max_backoff_s, self.backoff_s * 2 ** (refused - 1))
        node = refusal.node_epoch
        if node is not None and node > ours:
            # it has a newer ring: take it, at once the first time
            return Retry(refresh=True, delay_s=0.0 if refused == 1 else wait)
        if node is not None and node < ours:
            # it is behind (still committing, or yet to hear): it catches up; same ring
            return Retry(refresh=False, delay_s=wait)
        # our epoch but not our ring's owner, or an epoch it did not say: ask again
        return Retry(refresh=True, delay_s=wait)


@dataclass(frozen=True, slots=True)
class Start:
    """`go`: read at the backup's ring; `refresh`: first take the newer ring
    `url` holds (then ask again); `wait`: a ring change is committing, ask
    again shortly (`reason` says what is seen)."""

    action: str
    reason: str = ""
    url: str = ""


def start_step(ours: int, members: list[NodeView]) -> Start:
    """May a backup read at epoch `ours`, given what every member says (its
    `GET /admin/v1/rebalance`, `NodeView.id` its URL)? Pure."""
    answered = sorted((m.epoch, m.id, m.pending_epoch) for m in members if m.reachable)
    silent = [m.id for m in members if not m.reachable]
    if not answered:
        return Start("go", "no member answered: the reads will say why")
    epochs = sorted({epoch for epoch, _, _ in answered})
    # a joining ring of the member's own epoch was installed by gossip before the
    # driver's commit reached it: committed, not joining
    joining = sorted({p for epoch, _, p in answered if p is not None and p > epoch})
    if len(epochs) > 1:
        at = ", ".join(f"{url} at {epoch}" for epoch, url, _ in answered)
        return Start("wait", f"the members are committing a ring change ({at})")
    if joining and silent:
        return Start(
            "wait",
            f"a ring change to epoch {joining[-1]} is under way and "
            f"{', '.join(silent)} does not answer (it may have committed it)",
        )
    epoch = epochs[0]
    if epoch > ours:
        return Start("refresh", f"the members are at epoch {epoch}", answered[0][1])
    if epoch < ours:
        return Start("wait", f"the members are at epoch {epoch}, behind the ring's {ours}")
    return Start("go")
