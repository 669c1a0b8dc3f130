"""The async client's HTTP/1.1: requests as bytes, responses however they arrive."""

from __future__ import annotations

import pytest

from ringkv._h11 import (
    ParsedResponse,
    Prepared,
    ProtocolError,
    ResponseParser,
    prepare,
    request_bytes,
)


def parse_all(data: bytes, step: int, eof: bool = False) -> list[ParsedResponse]:
    parser, out = ResponseParser(), []
    for i in range(0, len(data), step):
        parser.feed(data[i : i + step])
        while (resp := parser.next()) is not None:
            out.append(resp)
    if eof:
        while (resp := parser.next(eof=True)) is not None:
            out.append(resp)
            if not resp.keep_alive:
                break
    return out


def test_request_bytes() -> None:
    assert request_bytes("PUT", "h:1", "/v1/kv/a?ttl=5", {"X-A": "1"}, b"v") == (
        b"PUT /v1/kv/a?ttl=5 HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nContent-Length: 1\r\n\r\nv"
    )
    assert request_bytes("GET", "h:1", "/x", {}, None) == b"GET /x HTTP/1.1\r\nHost: h:1\r\n\r\n"
    assert b"Content-Length: 0" in request_bytes("POST", "h", "/", {}, None)


def test_prepare_finds_the_address_and_builds_the_request() -> None:
    assert prepare("GET", "http://10.0.0.1:7100/v1/kv/a?x=1", {}, None) == Prepared(
        "http", "10.0.0.1", 7100, b"GET /v1/kv/a?x=1 HTTP/1.1\r\nHost: 10.0.0.1:7100\r\n\r\n"
    )
    assert prepare("GET", "https://kv.example/v1/ring", {}, None)[:3] == (
        "https",
        "kv.example",
        443,
    )
    assert prepare("GET", "http://kv.example/", {}, None).port == 80


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_keep_alive_responses_come_out_whole_in_order(step: int) -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Ringkv-Epoch: 4\r\n\r\nabc"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nde\r\n3;ext=1\r\nfgh\r\n0\r\nX-Trailer: t\r\n\r\n"
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    first, empty, chunked, last = parse_all(data, step)
    headers = {"content-length": "3", "x-ringkv-epoch": "4"}
    assert first == ParsedResponse(200, headers, b"abc", True)
    assert (empty.status, empty.body, empty.keep_alive) == (204, b"", True)
    assert (chunked.body, chunked.keep_alive) == (b"defgh", True)
    assert (last.status, last.body, last.keep_alive) == (404, b"{}", False)


def test_a_body_delimited_by_the_close() -> None:
    (resp,) = parse_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 4, eof=True)
    assert (resp.body, resp.keep_alive) == (b"until the end", False)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
)
def test_a_close_in_the_middle_is_an_error(data: bytes) -> None:
    parser = ResponseParser()
    parser.feed(data)
    assert parser.next() is None
    with pytest.raises(ProtocolError):
        parser.next(eof=True)


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_what_is_not_http_is_refused(data: bytes) -> None:
    parser = ResponseParser()
    parser.feed(data)
    with pytest.raises(ProtocolError):
        parser.next()
