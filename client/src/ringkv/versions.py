"""Versions: hybrid logical clock timestamps with the writer's id as tie-break.

Every stored value carries a `Version`. The newest version wins (last writer
wins): compare the 64-bit HLC timestamp first, then the writer's member id.
The timestamp is `physical_ms << 16 | logical`, so it sorts like wall-clock
time while staying monotonic on one node even if the wall clock steps back.

The clock is injected (`HLC(clock_ms)`) so the logic is testable without time.
On the wire a version is `"<timestamp>@<member id>"` (header `X-Ringkv-Version`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

from ringkv.digits import is_digits

__all__ = ["HLC", "LOGICAL_BITS", "MAX_AHEAD_MS", "ClockAheadError", "Version", "parse_version"]

LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
_MAX_TS = (1 << 64) - 1
# How far ahead of this clock a timestamp `HLC.observe` takes may be: the
# longest TTL's reach. A record further ahead is a broken clock or a forged
# record, and taking it would move this clock there for good (it is saved),
# up to 64 bits, after which no write could be stamped.
MAX_AHEAD_MS = 10 * 366 * 86_400_000


class ClockAheadError(ValueError):
    """A timestamp more than `MAX_AHEAD_MS` ahead of this node's clock."""


class Version(NamedTuple):
    """A totally ordered version: HLC timestamp, then writer id.

    A named tuple: compared and hashed in C, built cheaply on every read.
    """

    ts: int
    node: str

    @property
    def physical_ms(self) -> int:
        return self.ts >> LOGICAL_BITS

    def __str__(self) -> str:
        return f"{self.ts}@{self.node}"


def parse_version(text: str) -> Version:
    """Parse `"<ts>@<node>"`; raise ValueError with a clear message otherwise."""
    ts_text, sep, node = text.partition("@")
    if not sep or not node or not is_digits(ts_text):
        raise ValueError(f"version {text!r} is not of the form <timestamp>@<member id>")
    ts = int(ts_text)
    if ts > _MAX_TS:
        raise ValueError(f"version timestamp {ts} does not fit in 64 bits")
    return Version(ts, node)


class HLC:
    """A hybrid logical clock (Kulkarni et al.), safe to call from several threads.

    `now()` stamps a local event; `observe(ts)` folds in a timestamp seen from
    a peer so later local stamps sort after it. `floor` restores the highest
    timestamp persisted before a restart.
    """

    def __init__(self, clock_ms: Callable[[], int], floor: int = 0) -> None:
        self._clock_ms = clock_ms
        self._last = floor
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        physical = self._clock_ms() << LOGICAL_BITS
        with self._lock:
            self._last = physical if physical > self._last else self._last + 1
            return self._last

    def now_many(self, n: int) -> int:
        """`now()` called `n` times at once: the first of `n` consecutive
        timestamps (the last is first + n - 1), for a batch stamped as one."""
        physical = self._clock_ms() << LOGICAL_BITS
        with self._lock:
            first = physical if physical > self._last else self._last + 1
            self._last = first + n - 1
            return first

    def check_ahead(self, ts: int) -> int:
        """The wall clock (ms); ClockAheadError when `ts` is more than
        `MAX_AHEAD_MS` ahead of it."""
        now_ms = self._clock_ms()
        if ts >> LOGICAL_BITS > now_ms + MAX_AHEAD_MS:
            raise ClockAheadError(
                f"a record's timestamp {ts} is {(ts >> LOGICAL_BITS) - now_ms} ms ahead of "
                f"this node's clock (at most {MAX_AHEAD_MS} ms, 10 years): refused"
            )
        return now_ms

    def observe(self, ts: int) -> int:
        """Fold in a remote timestamp; return the new local time (after both).
        ClockAheadError (and the clock unchanged) when `ts` is more than
        `MAX_AHEAD_MS` ahead of the wall clock."""
        physical = self.check_ahead(ts) << LOGICAL_BITS
        with self._lock:
            self._last = max(physical, ts + 1, self._last + 1)
            return self._last

    @staticmethod
    def logical(ts: int) -> int:
        return ts & _LOGICAL_MASK
