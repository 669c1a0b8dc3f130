"""When a backup reads a partition again after its snapshot was refused (ringkv._backupretry).

The truth table of `RingRetry.after_refusal`: which refusals are retried,
whether the ring is fetched again first, how long to wait, and when the
backup gives up; and `refusal_of`, which errors are ring refusals at all.
"""

from __future__ import annotations

import pytest

from ringkv._backupretry import (
    Refusal,
    Retry,
    RingRetry,
    Start,
    refusal_of,
    start_step,
)
from ringkv.errors import ResponseError, error_for
from ringkv.rebalance import NodeView

POLICY = RingRetry(attempts=4, backoff_s=0.2, max_backoff_s=0.5)
OURS = 5


@pytest.mark.parametrize(
    ("refusal", "refused", "expected"),
    [
        # the node has a newer ring: fetch it (from that node), at once the first time
        (Refusal("stale_epoch", 6), 1, Retry(refresh=True, delay_s=0.0)),
        (Refusal("stale_epoch", 7), 2, Retry(refresh=True, delay_s=0.4)),
        (Refusal("not_owner", 6), 1, Retry(refresh=True, delay_s=0.0)),
        # the node is behind ours (committing, or yet to hear): same ring, after a wait
        (Refusal("stale_epoch", 4), 1, Retry(refresh=False, delay_s=0.2)),
        (Refusal("stale_epoch", 4), 2, Retry(refresh=False, delay_s=0.4)),
        (Refusal("stale_epoch", 4), 3, Retry(refresh=False, delay_s=0.5)),  # capped
        # our epoch but not an owner, or a node that does not say: fetch, wait
        (Refusal("not_owner", 5), 1, Retry(refresh=True, delay_s=0.2)),
        (Refusal("not_owner", None), 1, Retry(refresh=True, delay_s=0.2)),
        (Refusal("stale_epoch", None), 3, Retry(refresh=True, delay_s=0.5)),
        # the last attempt was refused: the backup fails
        (Refusal("stale_epoch", 6), 4, None),
        (Refusal("stale_epoch", 4), 4, None),
        (Refusal("not_owner", None), 9, None),
        # another conflict is not the ring moving: no retry
        (Refusal("conflict", 6), 1, None),
    ],
)
def test_after_refusal(refusal: Refusal, refused: int, expected: Retry | None) -> None:
    assert POLICY.after_refusal(refusal, OURS, refused) == expected


def test_the_defaults_bound_the_wait_to_a_few_seconds() -> None:
    policy = RingRetry()
    behind = Refusal("stale_epoch", OURS - 1)
    waits = []
    refused = 1
    while (step := policy.after_refusal(behind, OURS, refused)) is not None:
        waits.append(step.delay_s)
        refused += 1
    assert refused == policy.attempts  # the last read's refusal ends it
    assert 2.0 <= sum(waits) <= 8.0, waits


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (409, {"error": "stale_epoch", "message": "m", "epoch": 3}, Refusal("stale_epoch", 3)),
        (409, {"error": "not_owner", "message": "m", "epoch": 0}, Refusal("not_owner", 0)),
        (409, {"error": "stale_epoch", "message": "m"}, Refusal("stale_epoch", None)),
        (409, {"error": "stale_epoch", "epoch": "3"}, Refusal("stale_epoch", None)),
        (409, {"error": "stale_epoch", "epoch": True}, Refusal("stale_epoch", None)),
        (409, {"error": "stale_epoch", "epoch": -1}, Refusal("stale_epoch", None)),
        (409, {"error": "conflict", "message": "another joining ring"}, None),
        (503, {"error": "unavailable", "message": "starting"}, None),
        (403, {"error": "forbidden", "message": "wrong token"}, None),
    ],
)
def test_refusal_of(status: int, body: dict[str, object], expected: Refusal | None) -> None:
    exc: ResponseError = error_for(status, body)
    assert refusal_of(exc) == expected


def M(url: str, epoch: int | None, pending: int | None = None) -> NodeView:  # noqa: N802
    """A member at `url` at `epoch` joining `pending` (`epoch` None: silent)."""
    return NodeView(url, False) if epoch is None else NodeView(url, True, epoch, pending)


@pytest.mark.parametrize(
    ("members", "action", "words"),
    [
        # settled at our epoch: go, also with a member down (it cannot have committed
        # a ring no member is joining)
        ([M("a", 5), M("b", 5), M("c", 5)], "go", ""),
        ([M("a", 5), M("b", None), M("c", 5)], "go", ""),
        # a joining ring nobody committed, every member answering: writes go to both
        # rings' quorums, so reading ours is complete
        ([M("a", 5, 6), M("b", 5, 6), M("c", 5, 6), M("d", 5, 6)], "go", ""),
        # ... but a silent member may be the one that committed it
        ([M("a", 5, 6), M("b", 5, 6), M("d", None)], "wait", "d does not answer"),
        # a member that took the new ring from a peer (gossip) before the driver's
        # commit reached it still names it as joining: settled all the same
        ([M("a", 6), M("b", 6, 6), M("c", None)], "refresh", "epoch 6"),
        # members at two epochs: a commit under way
        ([M("a", 6), M("b", 5, 6), M("c", 5, 6)], "wait", "a at 6"),
        ([M("a", 6), M("b", 5), M("c", None)], "wait", "committing a ring change"),
        # all at a newer ring: take it
        ([M("a", 6), M("b", 6), M("c", None)], "refresh", "epoch 6"),
        # all behind our ring (it came from elsewhere): wait for them
        ([M("a", 4), M("b", 4)], "wait", "behind the ring's 5"),
        # nobody answers: the reads fail with their own errors
        ([M("a", None), M("b", None)], "go", "no member answered"),
    ],
)
def test_when_a_backup_may_begin(members: list[NodeView], action: str, words: str) -> None:
    step = start_step(OURS, members)
    assert step.action == action
    assert words in step.reason


def test_a_newer_ring_is_taken_from_a_member_that_holds_it() -> None:
    assert start_step(OURS, [M("a", 6), M("b", 6)]) == Start(
        "refresh", "the members are at epoch 6", "a"
    )
