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
"""

from __future__ import annotations

from dataclasses import dataclass

from ringkv.errors import ResponseError

__all__ = ["RING_MOVED", "Refusal", "Retry", "RingRetry", "refusal_of"]

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
