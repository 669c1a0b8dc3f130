"""When a backup reads a partition again after its snapshot was refused (ringkv._backupretry).

The truth table of `RingRetry.after_refusal`: which refusals are retried,
whether the ring is fetched again first, how long to wait, and when the
backup gives up; and `refusal_of`, which errors are ring refusals at all.
"""

from __future__ import annotations

import pytest

from ringkv._backupretry import Refusal, Retry, RingRetry, refusal_of
from ringkv.errors import ResponseError, error_for

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
