"""The fast lane's request parser: what it takes, and everything it leaves to aiohttp."""

from __future__ import annotations

import pytest

from ringkv_node.http.http1 import (
    MAX_HEAD_BYTES,
    UNSUPPORTED,
    FieldCache,
    Request,
    http_date,
    parse_request,
    response_head,
)

GET = b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n"


def parse(data: bytes, start: int = 0, max_body: int = 1000) -> Request:
    req = parse_request(data, start, max_body)
    assert isinstance(req, Request), req
    return req


def test_a_plain_get() -> None:
    req = parse(GET)
    assert (req.method, req.target, req.body, req.keep_alive) == ("GET", "/v1/kv/a", b"", True)
    assert req.headers == {"host": "x"}
    assert req.end == len(GET)


def test_a_put_with_its_body_and_what_follows_left_in_the_buffer() -> None:
    data = b"PUT /v1/kv/k?ttl=5 HTTP/1.1\r\nContent-Length: 5\r\nX-A:  v \t\r\n\r\nhello" + GET
    req = parse(data)
    assert (req.method, req.target, req.body) == ("PUT", "/v1/kv/k?ttl=5", b"hello")
    assert req.headers["x-a"] == "v"
    nxt = parse(data, req.end)
    assert nxt.target == "/v1/kv/a"
    assert nxt.end == len(data)


@pytest.mark.parametrize("cut", [0, 5, len(GET) - 1])
def test_an_incomplete_head_waits_for_more(cut: int) -> None:
    assert parse_request(GET[:cut], 0, 1000) is None


def test_an_incomplete_body_waits_for_more() -> None:
    data = b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello"
    assert parse_request(data, 0, 1000) is None
    assert parse(data + b"world").body == b"helloworld"


def test_connection_close_is_honoured() -> None:
    assert not parse(b"GET /x HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive
    assert parse(b"GET /x HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").keep_alive


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET /v1/kv/a HTTP/1.0\r\n\r\n", id="http/1.0"),
        pytest.param(b"GET http://h/v1/kv/a HTTP/1.1\r\n\r\n", id="absolute-form"),
        pytest.param(b"GET  /a HTTP/1.1\r\n\r\n", id="double space"),
        pytest.param(b"get /a HTTP/1.1\r\n\r\n", id="lower-case method"),
        pytest.param(b"GET /a\x7f HTTP/1.1\r\n\r\n", id="control char in target"),
        pytest.param(b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", id="non-ascii target"),
        pytest.param(b"GET /a HTTP/1.1\r\nNoColon\r\n\r\n", id="no colon"),
        pytest.param(b"GET /a HTTP/1.1\r\nA: 1\r\n  folded\r\n\r\n", id="obs-fold"),
        pytest.param(b"GET /a HTTP/1.1\r\nBad Name: 1\r\n\r\n", id="space in name"),
        pytest.param(b"GET /a HTTP/1.1\r\nA: 1\r\na: 2\r\n\r\n", id="repeated field"),
        pytest.param(
            b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="chunked"
        ),
        pytest.param(
            b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n", id="expect"
        ),
        pytest.param(b"PUT /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", id="negative length"),
        pytest.param(b"PUT /a HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", id="two lengths"),
        pytest.param(b"PUT /a HTTP/1.1\r\nContent-Length: \xd9\xa3\r\n\r\n", id="unicode digit"),
        pytest.param(b"PUT /a HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", id="body over limit"),
        pytest.param(b"GET /a HTTP/1.1\r\nA: \xff\r\n\r\n", id="obs-text value"),
    ],
)
def test_unusual_requests_are_left_to_aiohttp(data: bytes) -> None:
    assert parse_request(data, 0, 1000) is UNSUPPORTED
    cache: FieldCache = {}
    assert parse_request(data, 0, 1000, cache) is UNSUPPORTED
    assert parse_request(data, 0, 1000, cache) is UNSUPPORTED  # and again, from the cache


def test_a_repeated_header_block_is_parsed_once_and_judged_per_request() -> None:
    cache: FieldCache = {}
    put = b"PUT /v1/kv/%d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    first = parse_request(put % 1, 0, 1000, cache)
    second = parse_request(put % 2, 0, 1000, cache)
    assert isinstance(first, Request) and isinstance(second, Request)
    assert len(cache) == 1
    assert (second.target, second.body, second.end) == ("/v1/kv/2", b"hello", len(put % 2))
    assert second.headers == {"host": "x", "content-length": "5"}
    # the body limit is the caller's, not the cache's
    assert parse_request(put % 3, 0, 4, cache) is UNSUPPORTED
    assert parse_request((put % 4)[:-1], 0, 1000, cache) is None  # body not all here yet


def test_the_field_cache_stays_bounded() -> None:
    cache: FieldCache = {}
    for i in range(1000):
        req = parse_request(b"GET /a HTTP/1.1\r\nX-N: %d\r\n\r\n" % i, 0, 1000, cache)
        assert isinstance(req, Request) and req.headers == {"x-n": str(i)}
        assert len(cache) <= 64
    huge = b"GET /a HTTP/1.1\r\nX-Big: " + b"y" * 2000 + b"\r\n\r\n"
    cache.clear()
    assert isinstance(parse_request(huge, 0, 1000, cache), Request)
    assert cache == {}  # large blocks are not kept


def test_an_oversized_head_is_left_to_aiohttp_even_before_it_ends() -> None:
    big = b"GET /a HTTP/1.1\r\nA: " + b"x" * MAX_HEAD_BYTES
    assert parse_request(big, 0, 1000) is UNSUPPORTED
    assert parse_request(big + b"\r\n\r\n", 0, 1000) is UNSUPPORTED


def test_response_head() -> None:
    head = response_head(201, None, 0, "X-A: 1\r\n", "D", keep_alive=True)
    assert head == (
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nDate: D\r\nServer: ringkv\r\nX-A: 1\r\n\r\n"
    )
    head = response_head(404, "application/json", 7, "", "D", keep_alive=False)
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Content-Type: application/json\r\n" in head
    assert head.endswith(b"Connection: close\r\n\r\n")


def test_http_date_is_an_imf_fixdate() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
