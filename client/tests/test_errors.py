"""The documented exception tree is true: bad input is a `BadRequestError`
raised before anything is sent, and also the builtin kind Python code expects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ringkv import (
    AsyncClient,
    BadRequestError,
    Client,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidRequestError,
    Limits,
    RingkvError,
    ValueTypeError,
)
from ringkv.errors import error_for

NOWHERE = "http://127.0.0.1:9"  # nothing is sent: every case fails before a request
SMALL = Limits(max_key_bytes=8, max_value_bytes=16, max_batch_ops=1)

Case = tuple[str, Callable[[Any], Any], type[Exception], type[Exception], int, str]
CASES: list[Case] = [
    ("empty key", lambda kv: kv.put("", b"v"), InvalidKeyError, ValueError, 400, "invalid_key"),
    (
        "key too long",
        lambda kv: kv.get("k" * 9),
        InvalidKeyError,
        ValueError,
        413,
        "key_too_large",
    ),
    (
        "control character",
        lambda kv: kv.delete("a\x00b"),
        InvalidKeyError,
        ValueError,
        400,
        "invalid_key",
    ),
    (
        "value too large",
        lambda kv: kv.put("k", b"x" * 17),
        InvalidArgumentError,
        ValueError,
        413,
        "too_large",
    ),
    (
        "bad consistency",
        lambda kv: kv.get("k", consistency="most"),
        InvalidArgumentError,
        ValueError,
        400,
        "bad_request",
    ),
    (
        "bad ttl",
        lambda kv: kv.put("k", b"v", ttl=0),
        InvalidArgumentError,
        ValueError,
        400,
        "bad_request",
    ),
    ("non-bytes value", lambda kv: kv.put("k", 42), ValueTypeError, TypeError, 400, "bad_request"),
    (
        "atomic batch over the op limit",
        lambda kv: kv.batch(atomic=True).put("a", b"1").put("b", b"2").execute(),
        InvalidArgumentError,
        ValueError,
        413,
        "too_large",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sync_client_refuses_bad_input_as_documented(case: Case) -> None:
    what, call, cls, builtin, status, code = case
    with Client(NOWHERE, limits=SMALL) as kv, pytest.raises(cls) as err:
        call(kv)
    exc = err.value
    for kind in (RingkvError, BadRequestError, InvalidRequestError, builtin):
        assert isinstance(exc, kind), f"{what}: {type(exc).__mro__} is not a {kind.__name__}"
    assert isinstance(exc, InvalidRequestError)
    assert (exc.status, exc.code) == (status, code)
    assert str(exc) == exc.message  # in words, without a status prefix


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_async_client_refuses_the_same(case: Case) -> None:
    _, call, cls, builtin, _, _ = case
    kv = AsyncClient(NOWHERE, limits=SMALL)
    try:
        with pytest.raises(cls) as err:
            await call(kv)
        assert isinstance(err.value, BadRequestError) and isinstance(err.value, builtin)
    finally:
        await kv.close()


def test_a_node_answer_and_a_client_check_share_the_class() -> None:
    node = error_for(400, {"error": "invalid_key", "message": "key is empty"})
    assert type(node) is BadRequestError
    assert str(node) == "400 invalid_key: key is empty"
    mine = InvalidKeyError("key is empty")
    assert isinstance(mine, BadRequestError)
    assert (mine.status, mine.code, str(mine)) == (400, "invalid_key", "key is empty")
