from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringkv.versions import Version
from ringkv_node.model.records import Record, decode, encode, is_live

records = st.builds(
    Record,
    st.builds(Version, st.integers(0, 2**64 - 1), st.text(min_size=1, max_size=60)),
    st.binary(max_size=300),
    st.booleans(),
    st.integers(0, 2**64 - 1),
)


@given(records)
def test_round_trip(rec: Record) -> None:
    assert decode(encode(rec)) == rec


def test_visibility() -> None:
    v = Version(1, "n")
    assert is_live(Record(v, b"x"), now_ms=10**12)
    assert not is_live(None, 0)
    assert not is_live(Record(v, tombstone=True), 0)
    assert is_live(Record(v, b"x", expires_ms=100), now_ms=99)
    assert not is_live(Record(v, b"x", expires_ms=100), now_ms=100)


def test_newer_than() -> None:
    old, new = Record(Version(1, "b")), Record(Version(2, "a"))
    assert new.newer_than(old) and not old.newer_than(new)
    assert new.newer_than(None)
    assert not new.newer_than(new)
