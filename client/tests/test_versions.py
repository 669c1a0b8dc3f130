from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.versions import (
    HLC,
    LOGICAL_BITS,
    MAX_AHEAD_MS,
    ClockAheadError,
    Version,
    parse_version,
)


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_now_follows_wall_clock_and_counts_within_a_millisecond() -> None:
    clock = FakeClock(1000)
    hlc = HLC(clock)
    a, b = hlc.now(), hlc.now()
    assert a == 1000 << LOGICAL_BITS
    assert b == a + 1
    clock.ms = 1001
    assert hlc.now() == 1001 << LOGICAL_BITS


def test_now_many_is_now_called_that_many_times() -> None:
    clock = FakeClock(1000)
    one, many = HLC(clock), HLC(clock)
    for n in (1, 3, 1000, 70_000):  # past 2**16: the logical counter carries into the ms
        expected = [one.now() for _ in range(n)]
        first = many.now_many(n)
        assert list(range(first, first + n)) == expected
        assert many.last == one.last
        clock.ms += 1
    assert many.now() == one.now()


def test_monotonic_when_the_wall_clock_steps_back() -> None:
    clock = FakeClock(5000)
    hlc = HLC(clock)
    first = hlc.now()
    clock.ms = 4000
    assert hlc.now() > first
    assert hlc.now() > first + 1


def test_observe_moves_past_remote_time() -> None:
    clock = FakeClock(1000)
    hlc = HLC(clock)
    remote = 9000 << LOGICAL_BITS | 7
    hlc.observe(remote)
    assert hlc.now() > remote
    assert hlc.observe(5) > remote  # an old remote stamp never moves us back


def test_floor_from_before_a_restart_is_respected() -> None:
    floor = 10_000 << LOGICAL_BITS | 3
    assert HLC(FakeClock(1), floor=floor).now() == floor + 1


def test_threads_never_get_the_same_stamp() -> None:
    hlc = HLC(FakeClock(1))
    out: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        local = [hlc.now() for _ in range(2000)]
        with lock:
            out.extend(local)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == len(out) == 8000


def test_versions_order_by_timestamp_then_writer() -> None:
    assert Version(2, "a") > Version(1, "z")
    assert Version(1, "b") > Version(1, "a")
    assert max([Version(1, "b"), Version(3, "a"), Version(3, "c")]) == Version(3, "c")
    assert Version(5 << LOGICAL_BITS | 2, "n").physical_ms == 5


@given(st.integers(0, 2**64 - 1), st.text(min_size=1).filter(lambda s: "@" not in s))
def test_version_text_round_trip(ts: int, node: str) -> None:
    v = Version(ts, node)
    assert parse_version(str(v)) == v


@pytest.mark.parametrize("text", ["", "12", "@n", "x@n", "-1@n", "12@", str(2**64) + "@n"])
def test_bad_version_text(text: str) -> None:
    with pytest.raises(ValueError, match=r"version|64 bits"):
        parse_version(text)


def test_observe_refuses_a_timestamp_too_far_ahead_and_keeps_its_time() -> None:
    clock = HLC(lambda: 1_000)
    edge = (1_000 + MAX_AHEAD_MS) << LOGICAL_BITS | 0xFFFF  # the last millisecond taken
    assert clock.observe(edge) == edge + 1
    clock = HLC(lambda: 1_000)
    before = clock.now()
    with pytest.raises(ClockAheadError, match="ahead of this node's clock"):
        clock.observe((1_000 + MAX_AHEAD_MS + 1) << LOGICAL_BITS)
    with pytest.raises(ClockAheadError):
        clock.observe((1 << 64) - 1)
    assert clock.now() == before + 1  # unchanged by what it refused
