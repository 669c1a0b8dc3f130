"""The sans-I/O client core: routing, retries, error decoding, ring refresh."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from typing import Any

import msgpack
import pytest

from ringkv import errors
from ringkv._core import (
    Call,
    Request,
    Response,
    RetryPolicy,
    Router,
    Send,
    Sleep,
    batch_call,
    batch_calls,
    batch_results,
    check_timeout,
    check_token,
    decode,
    delete_ops,
    expand_seeds,
    key_call,
    keys_page,
    legacy_calls,
    put_ops,
    run_call,
    status_doc,
    to_bytes,
)
from ringkv.errors import InvalidArgumentError, ResponseError, ValueTypeError
from ringkv.keys import DEFAULT_LIMITS, InvalidKeyError, Limits, encode_key
from ringkv.ring import Member, initial_ring

RING = initial_ring([Member(f"n{i}", f"http://h{i}:8080") for i in range(5)], 64, 3)


def ring_response(epoch: int = 1) -> Response:
    doc = RING.to_dict() | {"epoch": epoch}
    return Response(200, {}, json.dumps(doc).encode())


def drive(
    gen: Generator[Any, Any, Any], answer: Callable[[Request], Response | Exception]
) -> tuple[Any, list[Any]]:
    """Run a core generator against a scripted transport; return (result, actions)."""
    actions: list[Any] = []
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            action = gen.throw(error) if error is not None else gen.send(value)
        except StopIteration as stop:
            return stop.value, actions
        actions.append(action)
        value, error = None, None
        if isinstance(action, Send):
            result = answer(action.request)
            if isinstance(result, Exception):
                error = result
            else:
                value = result


def test_keys_are_routed_to_their_owners_first() -> None:
    router = Router(["http://seed:8080"])
    router.install(RING.to_dict())
    call = key_call("GET", "user:42", DEFAULT_LIMITS)
    owners = [RING.member(m).url for m in RING.owners_of_key(b"user:42")]
    candidates = router.candidates(call)
    assert candidates[:3] == owners
    assert set(candidates) == {m.url for m in RING.members} | {"http://seed:8080"}


def test_first_call_loads_the_ring_then_goes_to_the_owner() -> None:
    router = Router(["http://seed:8080"])
    call = key_call("GET", "k", DEFAULT_LIMITS)
    sent: list[str] = []

    def answer(req: Request) -> Response:
        sent.append(req.url)
        if req.url.endswith("/v1/ring"):
            return ring_response()
        return Response(200, {"x-ringkv-epoch": "1"}, b"value")

    resp, _ = drive(run_call(call, router, RetryPolicy(), "tok"), answer)
    assert resp.body == b"value"
    assert sent[0] == "http://seed:8080/v1/ring"
    owner = RING.member(RING.owners_of_key(b"k")[0]).url
    assert sent[1] == f"{owner}/v1/kv/k"


def test_failover_to_the_next_owner_with_backoff() -> None:
    router = Router(["http://seed:8080"])
    router.install(RING.to_dict())
    owners = [RING.member(m).url for m in RING.owners_of_key(b"k")]
    down = {owners[0]}

    def answer(req: Request) -> Response | Exception:
        if any(req.url.startswith(d) for d in down):
            return errors.TransportError("connection refused")
        return Response(201, {}, b"")

    call = key_call("PUT", "k", DEFAULT_LIMITS, value=b"v")
    resp, actions = drive(run_call(call, router, RetryPolicy(), None), answer)
    assert resp.status == 201
    sends = [a.request.url for a in actions if isinstance(a, Send)]
    assert sends == [f"{owners[0]}/v1/kv/k", f"{owners[1]}/v1/kv/k"]
    assert any(isinstance(a, Sleep) for a in actions)


def test_gives_up_after_the_attempts() -> None:
    router = Router(["http://seed:8080"])
    router.install(RING.to_dict())
    call = key_call("GET", "k", DEFAULT_LIMITS)
    with pytest.raises(errors.TransportError):
        drive(
            run_call(call, router, RetryPolicy(attempts=3), None),
            lambda req: errors.TransportError("down"),
        )


def test_newer_epoch_in_an_answer_refreshes_the_ring() -> None:
    router = Router(["http://seed:8080"])
    router.install(RING.to_dict())

    def answer(req: Request) -> Response:
        if req.url.endswith("/v1/ring"):
            return ring_response(epoch=7)
        return Response(200, {"x-ringkv-epoch": "7"}, b"v")

    drive(run_call(key_call("GET", "k", DEFAULT_LIMITS), router, RetryPolicy(), None), answer)
    assert router.ring is not None
    assert router.ring.epoch == 7


def test_through_one_forwarded_address_direct_routing_fails() -> None:
    """Why `direct=False` exists: through a port-forward only the seed answers, and
    the owners' URLs (pod DNS) do not; with 5 members the attempts run out first."""
    router = Router(["http://127.0.0.1:9999"])

    def answer(req: Request) -> Response | Exception:
        if req.url.endswith("/v1/ring"):
            return ring_response()
        if req.url.startswith("http://127.0.0.1:9999"):
            return Response(200, {"x-ringkv-epoch": "1"}, b"v")
        return errors.TransportError("cannot resolve")

    with pytest.raises(errors.TransportError):
        drive(run_call(key_call("GET", "k", DEFAULT_LIMITS), router, RetryPolicy(), None), answer)


def test_not_direct_sends_every_call_to_the_seeds_and_loads_no_ring() -> None:
    router = Router(["http://127.0.0.1:9999/", "http://127.0.0.1:9998"], direct=False)
    sent: list[str] = []

    def answer(req: Request) -> Response | Exception:
        sent.append(req.url)
        if req.url.startswith("http://127.0.0.1:9999"):
            return errors.TransportError("connection refused")
        return Response(200, {"x-ringkv-epoch": "7"}, b"v")

    for key in ("a", "b", "user:42"):
        call = key_call("GET", key, DEFAULT_LIMITS)
        resp, _ = drive(run_call(call, router, RetryPolicy(), None), answer)
        assert resp.body == b"v"
    assert sent == [
        f"http://127.0.0.1:{port}/v1/kv/{key}"
        for key in ("a", "b", "user%3A42")
        for port in (9999, 9998)
    ]
    assert router.ring is None  # a newer epoch in an answer is no reason to load one


def test_not_direct_ignores_a_ring_it_was_given() -> None:
    router = Router(["http://127.0.0.1:9999"], direct=False)
    router.install(RING.to_dict())
    assert router.candidates(key_call("GET", "k", DEFAULT_LIMITS)) == ["http://127.0.0.1:9999"]
    assert router.ring_urls() == ["http://127.0.0.1:9999"]
    assert not router.stale(Response(200, {"x-ringkv-epoch": "9"}, b""))


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (400, {"error": "invalid_key", "message": "x"}, errors.BadRequestError),
        (413, {"error": "too_large", "message": "x"}, errors.BadRequestError),
        (401, {"error": "unauthorized", "message": "x"}, errors.AuthError),
        (403, {"error": "forbidden", "message": "x"}, errors.AuthError),
        (404, {"error": "not_found", "message": "x"}, errors.NotFoundError),
        (409, {"error": "stale_epoch", "message": "x"}, errors.ConflictError),
        (
            503,
            {"error": "not_enough_replicas", "message": "x", "needed": 2, "answered": 1},
            errors.NotEnoughReplicasError,
        ),
        (503, {"error": "unavailable", "message": "x"}, errors.UnavailableError),
        (507, {"error": "storage_full", "message": "x"}, errors.StorageFullError),
    ],
)
def test_error_decoding(status: int, body: dict[str, Any], cls: type[Exception]) -> None:
    with pytest.raises(cls) as info:
        decode(Response(status, {}, json.dumps(body).encode()))
    assert isinstance(info.value, errors.ResponseError)
    assert info.value.code == body["error"]
    if cls is errors.NotEnoughReplicasError:
        assert (info.value.needed, info.value.answered) == (2, 1)  # type: ignore[attr-defined]


def test_a_non_json_error_still_decodes() -> None:
    with pytest.raises(errors.UnavailableError, match="502 http_error: bad gateway"):
        decode(Response(502, {}, b"bad gateway"))


def test_retry_decisions() -> None:
    policy = RetryPolicy(attempts=4)
    get = Call("GET", "/v1/kv/k", b"k")
    put = Call("PUT", "/v1/kv/k", b"k", b"v")
    quorum = errors.NotEnoughReplicasError(503, "not_enough_replicas", "", {})
    bad = errors.BadRequestError(400, "invalid_key", "", {})
    assert policy.should_retry(put, errors.TransportError("x"), 0)
    assert policy.should_retry(get, quorum, 0)
    assert not policy.should_retry(put, quorum, 0)  # may have landed: never repeat blindly
    assert not policy.should_retry(get, bad, 0)
    assert not policy.should_retry(get, errors.TransportError("x"), 3)
    delays = [policy.delay(a, rand=lambda: 1.0) for a in range(8)]
    assert delays[:3] == [0.05, 0.1, 0.2]
    assert max(delays) == policy.max_backoff_s
    assert policy.delay(2, rand=lambda: 0.0) == 0


def test_requests_are_built_and_checked_before_sending() -> None:
    call = key_call("PUT", "a/b c", DEFAULT_LIMITS, value="é", consistency="all", ttl=5)
    assert call.path == "/v1/kv/a%2Fb%20c?consistency=all&ttl=5"
    assert call.body == "é".encode()
    req = call.request("http://h:1", "t")
    assert req.headers == {"Authorization": "Bearer t"}
    with pytest.raises(InvalidKeyError):
        key_call("GET", "", DEFAULT_LIMITS)
    with pytest.raises(ValueError, match="consistency"):
        key_call("GET", "k", DEFAULT_LIMITS, consistency="most")
    with pytest.raises(ValueError, match="ttl"):
        key_call("PUT", "k", DEFAULT_LIMITS, value=b"", ttl=0)
    atomic = batch_call([("put", "u{1}a", b"x", None, None)], DEFAULT_LIMITS, atomic=True)
    assert atomic.key == b"u{1}a"
    assert atomic.content_type == "application/msgpack"  # raw values: no base64
    assert msgpack.unpackb(atomic.body or b"")["ops"][0] == {
        "op": "put",
        "key": "u{1}a",
        "value": b"x",
    }


@pytest.mark.parametrize(
    "key", ["k", "é" * 300, "é" * 600, "x" * 1025, "", "a\x01", "\ud800", b"k", "tab\there"]
)
@pytest.mark.parametrize("value", [b"v", "text", None])
def test_put_many_batches_check_keys_as_single_calls_do(key: str | bytes, value: object) -> None:
    """`put_many`'s puts skip steps of `encode_key`, never a refusal; a None
    value is refused as `put` refuses it (it was stored as b"")."""
    try:
        expected: object = {
            "op": "put",
            "key": encode_key(key).decode(),
            "value": to_bytes(value),
        }
    except (ValueError, TypeError) as exc:  # InvalidKeyError, ValueTypeError
        expected = (type(exc), str(exc))
    try:
        call = batch_call([("put", key, value, None, None)], DEFAULT_LIMITS)  # type: ignore[list-item]
        got: object = msgpack.unpackb(call.body or b"")["ops"][0]
    except (ValueError, TypeError) as exc:
        got = (type(exc), str(exc))
    assert got == expected


def test_seeds_from_urls_and_headless_service_names() -> None:
    def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("kv-peers.ns.svc.cluster.local", 8080)
        return ["10.0.0.1", "10.0.0.2"]

    assert expand_seeds("http://kv:8080/", resolve) == ["http://kv:8080"]
    assert expand_seeds("ringkv://kv-peers.ns.svc.cluster.local:8080", resolve) == [
        "http://10.0.0.1:8080",
        "http://10.0.0.2:8080",
    ]
    with pytest.raises(ValueError, match="not an http"):
        expand_seeds("kv:8080", resolve)


def test_many_key_calls_refuse_what_would_lose_or_misplace_data() -> None:
    with pytest.raises(ValueTypeError, match="not NoneType"):
        batch_call([("put", "k", None, None, None)], DEFAULT_LIMITS)  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="a list of keys, not one key"):
        delete_ops("xyz")  # deleted "x", "y" and "z"
    with pytest.raises(InvalidArgumentError, match="mapping of key to value"):
        put_ops(["k"], None)  # type: ignore[arg-type]


@pytest.mark.parametrize("token", ["x\r\nX-Injected: yes", "a b", "tab\t", "é", ""])
def test_a_token_that_could_carry_other_headers_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgumentError, match="visible ASCII"):
        check_token(token)


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), 1e308, "5", True])
def test_timeouts_sockets_cannot_take_are_refused(timeout: object) -> None:
    with pytest.raises(InvalidArgumentError, match="timeout must be"):
        check_timeout(timeout)


@pytest.mark.parametrize(
    ("body", "after"),
    [
        (b'{"keys": ["a"], "next": "a"}', "a"),  # listing on would never end
        (b'{"keys": ["a"], "next": "0"}', "a"),
        (b'{"keys": ["a"], "next": 7}', None),
        (b'{"keys": [1]}', None),
        (b"{}", None),
        (b"[]", None),
        (b"not json", None),
    ],
)
def test_a_keys_page_of_another_shape_is_a_response_error(body: bytes, after: str | None) -> None:
    with pytest.raises(ResponseError, match="not a page of keys"):
        keys_page(Response(200, {}, body), after)


def test_a_keys_page() -> None:
    assert keys_page(Response(200, {}, b'{"keys": ["b"], "next": "b"}'), "a") == (["b"], "b")
    assert keys_page(Response(200, {}, b'{"keys": [], "next": null}'), "a") == ([], None)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:7100?x=1", "http://h:1#frag", "http://", "https:///"]
)
def test_a_seed_url_with_a_query_a_fragment_or_no_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="a seed URL has a host and no query or fragment"):
        expand_seeds(url, lambda host, port: [])


@pytest.mark.parametrize("body", [{"results": [{}]}, {"results": 5}, [], {}])
def test_a_batch_answer_of_another_shape_is_a_response_error(body: object) -> None:
    with pytest.raises(ResponseError, match="another shape"):
        batch_results(Response(200, {}, msgpack.packb(body)))


@pytest.mark.parametrize(
    "body",
    [
        b"<html>hi</html>",
        b"[]",
        b'{"ok": true}',
        b'{"node_id": 5, "ready": true}',
        b'{"node_id": "n0", "ready": "yes"}',
        b'{"node_id": "n0"}',
    ],
)
def test_a_status_answer_that_is_not_a_nodes_is_a_response_error(body: bytes) -> None:
    """`ringkv status` against a server that is not a ringkv node said KeyError."""
    with pytest.raises(ResponseError, match="not a ringkv node's"):
        status_doc(Response(200, {}, body))


def test_a_status_answer_is_taken_whole() -> None:
    doc = {"node_id": "n0", "ready": False, "storage": {"live": 3}}
    assert status_doc(Response(200, {}, json.dumps(doc).encode())) == doc


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"target": [5]}, "must name URLs"),
        ({"target": []}, "must name URLs"),
        ({"target": b"http://h:1"}, "not bytes"),
        ({"target": {"http://h:1"}}, "not set"),
        ({"target": 5}, "not int"),
        ({"direct": "no"}, "direct must be True or False"),
        ({"pool_size": 0}, "pool_size must be a whole number"),
        ({"pool_size": 2.5}, "pool_size must be a whole number"),
    ],
)
def test_a_client_of_arguments_of_the_wrong_type_is_refused(
    kwargs: dict[str, Any], words: str
) -> None:
    """`Client([5])` raised AttributeError at the first call, and `direct="no"`
    was taken as true."""
    from ringkv import AsyncClient, Client

    args = {"target": "http://127.0.0.1:9", **kwargs}
    for cls in (Client, AsyncClient):
        with pytest.raises(InvalidArgumentError, match=words):
            cls(args["target"], **{k: v for k, v in args.items() if k != "target"})


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda kv: kv.keys(prefix=5), "prefix must be a string, not int"),
        (lambda kv: kv.keys(start_after=b"a"), "start_after must be a string, not bytes"),
        (lambda kv: kv.keys(limit="5"), "limit must be a whole number"),
        (lambda kv: kv.keys(limit=-1), "limit must be a whole number"),
        (lambda kv: list(kv.iter_keys(page_size=0)), "page size must be a whole number"),
    ],
)
def test_listing_arguments_of_the_wrong_type_are_refused_before_sending(
    call: Callable[[Any], Any], words: str
) -> None:
    """Nothing listens at the seed: each is refused before any request."""
    from ringkv import Client

    with (
        Client("http://127.0.0.1:9", timeout=1) as kv,
        pytest.raises(InvalidArgumentError, match=words),
    ):
        call(kv)


@pytest.mark.parametrize("max_bytes", [16 << 20, 40_000, 5_000, 1_200])
def test_a_big_put_many_is_cut_within_both_batch_limits_in_order(max_bytes: int) -> None:
    """`put_many` of values too big for one body was refused whole (413)
    however few its ops; it is cut until every body fits, in order."""
    limits = Limits(max_batch_ops=64, max_batch_bytes=max_bytes)
    ops = put_ops({f"k{i:04d}": bytes([i % 251]) * (i % 700) for i in range(300)}, None)
    pairs = batch_calls(ops, limits, False, None)
    calls = [c for _, c in pairs]
    assert [op for chunk, _ in pairs for op in chunk] == ops
    docs = [msgpack.unpackb(c.body, raw=False) for c in calls]
    assert [(o["key"], o["value"]) for d in docs for o in d["ops"]] == [
        (k, v) for _, k, v, _, _ in ops
    ]
    assert all(len(c.body or b"") <= max_bytes for c in calls)
    assert all(len(d["ops"]) <= 64 for d in docs)
    assert (len(calls) == 5) == (max_bytes >= 40_000)  # 300 ops / 64: cut by count alone


def test_an_atomic_batch_is_never_cut() -> None:
    ops = put_ops({f"k{i}": b"x" * 500 for i in range(10)}, None)
    ((_, call),) = batch_calls(ops, Limits(max_batch_bytes=1000), True, None)
    assert len(msgpack.unpackb(call.body, raw=False)["ops"]) == 10


@pytest.mark.parametrize(
    ("status", "code", "message", "n", "calls"),
    [
        (413, "too_large", "batch has 2500 ops; the limit is 1000", 2500, 3),
        (413, "too_large", "batch has 1000 ops; the limit is 500", 1000, None),  # not the old limit
        (413, "too_large", "batch body is 17000000 bytes; the limit is 16777216", 2500, None),
        (413, "key_too_large", "key is 500 bytes", 2500, None),
        (400, "bad_request", "batch has 2500 ops; the limit is 1000", 2500, None),
    ],
)
def test_only_a_refusal_of_too_many_ops_is_sent_again_in_calls_of_the_old_limit(
    status: int, code: str, message: str, n: int, calls: int | None
) -> None:
    ops = put_ops({f"k{i}": b"v" for i in range(n)}, None)
    exc = ResponseError(status, code, message, {})
    got = legacy_calls(exc, ops, False, DEFAULT_LIMITS, None)
    assert (None if got is None else len(got)) == calls
    if got is not None:
        assert [op for chunk, _ in got for op in chunk] == ops
