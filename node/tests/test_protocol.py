from __future__ import annotations

import json

import msgpack
import pytest

from ringkv.keys import Limits
from ringkv_node.errors import ApiError
from ringkv_node.http.parsing import BatchOp, _parse_op, parse_batch, parse_limit, parse_ttl

LIMITS = Limits()


def test_json_batch() -> None:
    body = json.dumps(
        {
            "ops": [
                {"op": "put", "key": "a", "value": "aGk=", "ttl": 5},
                {"op": "delete", "key": "b"},
            ],
            "atomic": True,
        }
    ).encode()
    req = parse_batch(body, "application/json", LIMITS, {})
    assert req.ops == (BatchOp("put", b"a", b"hi", 5), BatchOp("delete", b"b"))
    assert req.atomic and req.consistency is None


def test_msgpack_batch_and_query_flags() -> None:
    body = msgpack.packb({"ops": [{"op": "put", "key": "a", "value": b"\x00"}]})
    req = parse_batch(body, "application/msgpack", LIMITS, {"atomic": "true", "consistency": "all"})
    assert req.ops == (BatchOp("put", b"a", b"\x00"),)
    assert req.atomic and req.consistency == "all"


@pytest.mark.parametrize(
    "op",
    [
        {"op": "put", "key": "k", "value": b"v"},  # the quick path
        {"op": "put", "key": "", "value": b"v"},
        {"op": "put", "key": "a\x01", "value": b"v"},
        {"op": "put", "key": "x" * 1025, "value": b"v"},
        {"op": "put", "key": "é" * 600, "value": b"v"},  # 1200 bytes of UTF-8
        {"op": "put", "key": "k", "value": b"v" * 3},
        {"op": "put", "key": "k", "value": "text"},
        {"op": "put", "key": b"k", "value": b"v"},
        {"op": "put", "key": 7, "value": b"v"},
        {"op": "pot", "key": "k", "value": b"v"},
        {"op": "put", "key": "k", "ttl": 5},
        {"op": "delete", "key": "k", "value": b"v"},
    ],
)
def test_quick_msgpack_puts_are_parsed_as_every_op_is(op: dict[str, object]) -> None:
    """What `put_many` sends skips `_parse_op`'s steps: same op, or same refusal."""
    small = Limits(max_value_bytes=2)
    body = msgpack.packb({"ops": [op]})
    try:
        quick: object = parse_batch(body, "application/msgpack", small, {}).ops
    except ApiError as exc:
        quick = (exc.status, exc.message)
    try:
        slow: object = (_parse_op(0, op, True, small, None),)
    except ApiError as exc:
        slow = (exc.status, exc.message)
    assert quick == slow


def test_errors_point_at_the_op() -> None:
    body = json.dumps({"ops": [{"op": "delete", "key": "a"}, {"op": "put", "key": "b"}]}).encode()
    with pytest.raises(ApiError, match=r"ops\[1\]\.value") as info:
        parse_batch(body, "application/json", LIMITS, {})
    assert info.value.status == 400


def test_value_limit_in_batch() -> None:
    small = Limits(max_value_bytes=2)
    body = json.dumps({"ops": [{"op": "put", "key": "a", "value": "aGVsbG8="}]}).encode()
    with pytest.raises(ApiError) as info:
        parse_batch(body, "application/json", small, {})
    assert info.value.status == 413


@pytest.mark.parametrize("bad", ["0", "-1", "x", "1.0", "", str(10**12)])
def test_ttl_refusals(bad: str) -> None:
    with pytest.raises(ApiError):
        parse_ttl(bad)


def test_ttl_and_limit_accept() -> None:
    assert parse_ttl(None) is None
    assert parse_ttl("60") == 60
    assert parse_limit(None) == 1000
    assert parse_limit("5") == 5
