"""`ringkv.retention.select`: keepLast plus daily, weekly and monthly tiers (pure)."""

from __future__ import annotations

import datetime

import pytest

from ringkv.retention import Backup, Retention, select


def at(text: str) -> int:
    moment = datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


# 2026-11-30 is a Monday: ISO week 49 runs from it to Sunday 2026-12-06.
BACKUPS = [
    Backup("a", at("2026-10-15T03:00")),  # October
    Backup("b", at("2026-11-20T03:00")),  # November, week 47
    Backup("c", at("2026-11-29T03:00")),  # Sunday, week 48
    Backup("d", at("2026-11-30T03:00")),  # Monday, week 49
    Backup("e", at("2026-12-02T03:00")),  # week 49
    Backup("f", at("2026-12-03T03:00")),  # week 49, early
    Backup("g", at("2026-12-03T15:00")),  # week 49, the newest
]


L, D, W, M = ["last"], ["daily"], ["weekly"], ["monthly"]


@pytest.mark.parametrize(
    ("policy", "kept", "pruned"),
    [
        (Retention(keep_last=1), {"g": L}, list("fedcba")),
        (Retention(keep_last=3), {"g": L, "f": L, "e": L}, list("dcba")),
        # the newest of each day: f shares g's day
        (Retention(keep_daily=3), {"g": D, "e": D, "d": D}, list("fcba")),
        # the newest of each ISO week: d, e, f, g are week 49
        (Retention(keep_weekly=3), {"g": W, "c": W, "b": W}, list("feda")),
        # the newest of each month: d is November's
        (Retention(keep_monthly=2), {"g": M, "d": M}, list("fecba")),
        # more periods asked for than there are: each period's newest, no more
        (Retention(keep_monthly=12), {"g": M, "d": M, "a": M}, list("fecb")),
        # tiers add up, and one backup may be kept for several reasons
        (
            Retention(keep_last=2, keep_daily=2, keep_weekly=2, keep_monthly=3),
            {"g": ["last", "daily", "weekly", "monthly"], "f": L, "e": D, "d": M, "c": W, "a": M},
            ["b"],
        ),
        (Retention(keep_last=100), {n: L for n in "gfedcba"}, []),
    ],
    ids=["last1", "last3", "daily", "weekly", "monthly", "monthly-more", "tiers", "all"],
)
def test_truth_table(policy: Retention, kept: dict[str, list[str]], pruned: list[str]) -> None:
    decision = select(BACKUPS, policy)
    assert decision.keep == kept
    assert decision.prune == pruned
    assert list(decision.keep) == [n for n in "gfedcba" if n in kept]  # newest first


def test_order_of_input_does_not_matter() -> None:
    policy = Retention(keep_last=1, keep_weekly=2)
    assert select(BACKUPS, policy) == select(list(reversed(BACKUPS)), policy)


def test_days_are_utc_and_ties_break_by_name() -> None:
    late = [Backup("x", at("2026-12-03T23:59:59")), Backup("y", at("2026-12-04T00:00:00"))]
    assert select(late, Retention(keep_daily=2)).keep == {"y": ["daily"], "x": ["daily"]}
    tie = [Backup("p", 1000), Backup("q", 1000)]
    assert select(tie, Retention(keep_last=1)).keep == {"q": ["last"]}


def test_nothing_to_select() -> None:
    assert select([], Retention(keep_last=3)).keep == {}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "must keep something"),
        ({"keep_last": 0, "keep_daily": 0}, "must keep something"),
        ({"keep_last": -1}, "keep_last must be a whole number"),
        ({"keep_daily": True}, "keep_daily must be a whole number"),
    ],
)
def test_bad_policies(kwargs: dict[str, int], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Retention(**kwargs)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        select([Backup("a", 1), Backup("a", 2)], Retention(keep_last=1))
