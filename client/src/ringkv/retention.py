"""Which backups to keep: `keepLast` plus tiered `keepDaily` / `keepWeekly` / `keepMonthly`.

    keep = select(backups, Retention(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=6))

The rule, as restic's and borg's `forget` have it:

- `keep_last` n: the n newest backups;
- `keep_daily` n: for each of the n newest calendar days (UTC) that have a
  backup, the newest backup of that day; `keep_weekly` likewise per ISO week
  (Monday to Sunday), `keep_monthly` per calendar month;
- a backup is kept when any rule keeps it (the reasons say which); every
  other one is pruned.

Days without a backup do not count against a tier: `keep_daily=7` keeps the
newest backup of each of the last seven days that had one, however far
apart. The newest backup is always kept (a policy must keep at least one).
Only completed backups should be given; a running or failed one is the
caller's business. Pure: backups and the policy in, a decision out (the
operator prunes scheduled KVBackups with it, `ringkv backup prune` a
destination).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Backup", "Decision", "Retention", "select"]


@dataclass(frozen=True, slots=True)
class Retention:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")
        if not (self.keep_last or self.keep_daily or self.keep_weekly or self.keep_monthly):
            raise ValueError(
                "a retention policy must keep something: set keepLast, keepDaily, "
                "keepWeekly or keepMonthly to 1 or more"
            )


@dataclass(frozen=True, slots=True)
class Backup:
    """A completed backup: its name (or id) and when it was taken (unix ms)."""

    name: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    keep: dict[str, list[str]] = field(default_factory=dict)  # name -> why ("last", "daily", ...)
    prune: list[str] = field(default_factory=list)  # newest first


def _day(ms: int) -> tuple[int, ...]:
    d = _date(ms)
    return (d.year, d.month, d.day)


def _week(ms: int) -> tuple[int, ...]:
    iso = _date(ms).isocalendar()
    return (iso.year, iso.week)


def _month(ms: int) -> tuple[int, ...]:
    d = _date(ms)
    return (d.year, d.month)


def _date(ms: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).date()


_TIERS: tuple[tuple[str, str, Callable[[int], tuple[int, ...]]], ...] = (
    ("keep_daily", "daily", _day),
    ("keep_weekly", "weekly", _week),
    ("keep_monthly", "monthly", _month),
)


def select(backups: Sequence[Backup], policy: Retention) -> Decision:
    """What `policy` keeps of `backups` (any order; names unique) and what it prunes."""
    names = [b.name for b in backups]
    if len(set(names)) != len(names):
        raise ValueError("backup names must be unique")
    newest_first = sorted(backups, key=lambda b: (b.created_ms, b.name), reverse=True)
    keep: dict[str, list[str]] = {}
    for b in newest_first[: policy.keep_last]:
        keep.setdefault(b.name, []).append("last")
    for attr, reason, period in _TIERS:
        wanted = getattr(policy, attr)
        seen: set[tuple[int, ...]] = set()
        for b in newest_first:
            if len(seen) >= wanted:
                break
            slot = period(b.created_ms)
            if slot not in seen:  # the newest of its period
                seen.add(slot)
                keep.setdefault(b.name, []).append(reason)
    prune = [b.name for b in newest_first if b.name not in keep]
    return Decision({b.name: keep[b.name] for b in newest_first if b.name in keep}, prune)
