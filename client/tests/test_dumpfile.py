"""The dump format's parser (pure): what a line may hold, and what it says when not."""

from __future__ import annotations

import json

import pytest

from ringkv.dumpfile import DumpRecord, parse


def test_records_and_blank_lines() -> None:
    lines = ['{"key": "a", "value": "eA=="}', "", '{"key": "b", "deleted": true}']
    assert list(parse(lines)) == [DumpRecord("a", b"x"), DumpRecord("b", deleted=True)]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ({"key": "", "value": "eA=="}, "key is empty"),
        ({"key": "k" * 401, "value": "eA=="}, "the limit is 400"),
        ({"key": "a\u0001", "value": "eA=="}, "control character"),
        ({"key": "k", "value": "eA==", "expires_ms": 10**23}, "expires_ms"),  # msgpack overflowed
        ({"key": "k", "value": "é"}, "not valid base64"),
    ],
)
def test_a_bad_line_is_named_with_its_number(line: object, words: str) -> None:
    with pytest.raises(ValueError, match=rf"line 2: .*{words}"):
        list(parse(['{"key": "ok", "value": ""}', json.dumps(line)]))


def test_json_nested_too_deep_is_a_bad_line_not_a_crash() -> None:
    with pytest.raises(ValueError, match="line 1: not a ringkv dump record"):
        list(parse(["[" * 200_000]))
