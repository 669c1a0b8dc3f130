from __future__ import annotations

import pytest

from ringkv.keys import MAX_KEY_BYTES, InvalidKeyError, Limits, encode_key


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a", b"a"),
        ("user:{42}:name", b"user:{42}:name"),
        ("päth/ü", "päth/ü".encode()),
        ("🔑", "🔑".encode()),
        (b"raw", b"raw"),
        ("x" * 400, b"x" * 400),
        ("tab\tno", None),
    ],
)
def test_valid_and_invalid_keys(key: str | bytes, expected: bytes | None) -> None:
    if expected is None:
        with pytest.raises(InvalidKeyError, match="control"):
            encode_key(key)
    else:
        assert encode_key(key) == expected


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        (b"", "empty"),
        ("x" * 401, "401 bytes; the limit is 400"),
        ("é" * 201, "402 bytes"),
        (b"\xff\xfe", "not valid UTF-8"),
        ("\ud800", "surrogate"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\x7fb", "control"),
        (42, "must be str or bytes"),
    ],
)
def test_refusals_say_why(key: object, message: str) -> None:
    with pytest.raises(InvalidKeyError, match=message):
        encode_key(key)  # type: ignore[arg-type]


def test_limit_is_configurable() -> None:
    assert encode_key("abcd", Limits(max_key_bytes=4)) == b"abcd"
    with pytest.raises(InvalidKeyError, match="limit is 4"):
        encode_key("abcde", Limits(max_key_bytes=4))
    with pytest.raises(ValueError, match="max_value_bytes"):
        Limits(max_value_bytes=0)
    assert MAX_KEY_BYTES == 439  # ringkv-node --max-key-bytes refuses more
