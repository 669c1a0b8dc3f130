"""Every malformed request gets a 4xx JSON error, and the node stays ready."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from ringkv.packed import pack

from nodeproc import NodeProcess

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for the whole table: a refusal must not disturb the next request."""
    proc = NodeProcess("n1", tmp_path_factory.mktemp("bad-input"))
    proc.start()
    yield proc
    proc.kill()


B64 = base64.b64encode(b"v").decode()
BIG_KEY = "k" * 1025
MSGPACK = {"Content-Type": "application/msgpack"}


def batch(*ops: object, **extra: object) -> bytes:
    return json.dumps({"ops": list(ops), **extra}).encode()


# (id, method, path, body, headers, status, error code)
CASES: list[tuple[str, str, str, bytes, dict[str, str], int, str]] = [
    ("unknown route", "GET", "/v2/kv/a", b"", {}, 404, "not_found"),
    ("root", "GET", "/", b"", {}, 404, "not_found"),
    ("kv without key", "GET", "/v1/kv/", b"", {}, 404, "not_found"),
    ("POST on kv", "POST", "/v1/kv/a", b"x", {}, 405, "method_not_allowed"),
    ("PATCH on kv", "PATCH", "/v1/kv/a", b"x", {}, 405, "method_not_allowed"),
    ("GET on batch", "GET", "/v1/batch", b"", {}, 405, "method_not_allowed"),
    ("PUT on keys", "PUT", "/v1/keys", b"", {}, 405, "method_not_allowed"),
    ("DELETE on status", "DELETE", "/v1/status", b"", {}, 405, "method_not_allowed"),
    ("key too long", "PUT", f"/v1/kv/{BIG_KEY}", b"x", {}, 413, "key_too_large"),
    ("GET key too long", "GET", f"/v1/kv/{BIG_KEY}", b"", {}, 413, "key_too_large"),
    # LMDB takes 511-byte keys: these were 503s that failed the writes sharing their commit
    ("key of 600 bytes", "PUT", f"/v1/kv/{'k' * 600}", b"x", {}, 413, "key_too_large"),
    ("key of 401 bytes", "DELETE", f"/v1/kv/{'k' * 401}", b"", {}, 413, "key_too_large"),
    ("key with NUL", "PUT", "/v1/kv/a%00b", b"x", {}, 400, "invalid_key"),
    ("key with newline", "PUT", "/v1/kv/a%0Ab", b"x", {}, 400, "invalid_key"),
    ("key not UTF-8", "PUT", "/v1/kv/%FF%FE", b"x", {}, 400, "invalid_key"),
    ("value too large", "PUT", "/v1/kv/big", b"x" * (4 * 1024 * 1024 + 1), {}, 413, "too_large"),
    ("bad consistency", "PUT", "/v1/kv/a?consistency=most", b"x", {}, 400, "bad_request"),
    ("GET bad consistency", "GET", "/v1/kv/a?consistency=", b"", {}, 400, "bad_request"),
    ("ttl zero", "PUT", "/v1/kv/a?ttl=0", b"x", {}, 400, "bad_request"),
    ("ttl negative", "PUT", "/v1/kv/a?ttl=-5", b"x", {}, 400, "bad_request"),
    ("ttl text", "PUT", "/v1/kv/a?ttl=soon", b"x", {}, 400, "bad_request"),
    ("ttl float", "PUT", "/v1/kv/a?ttl=1.5", b"x", {}, 400, "bad_request"),
    ("ttl huge", "PUT", "/v1/kv/a?ttl=99999999999999", b"x", {}, 400, "bad_request"),
    # str.isdigit() takes these, int() does not ('²') or should not ('١٢')
    ("ttl superscript", "PUT", "/v1/kv/a?ttl=%C2%B2", b"x", {}, 400, "bad_request"),
    ("ttl Arabic digits", "PUT", "/v1/kv/a?ttl=%D9%A1%D9%A2", b"x", {}, 400, "bad_request"),
    ("expires superscript", "PUT", "/v1/kv/a?expires=%C2%B2", b"x", {}, 400, "bad_request"),
    ("limit superscript", "GET", "/v1/keys?limit=%C2%B2", b"", {}, 400, "bad_request"),
    ("ttl of 5000 digits", "PUT", f"/v1/kv/a?ttl={'9' * 5000}", b"x", {}, 400, "bad_request"),
    ("limit of 5000 digits", "GET", f"/v1/keys?limit={'9' * 5000}", b"", {}, 400, "bad_request"),
    ("limit zero", "GET", "/v1/keys?limit=0", b"", {}, 400, "bad_request"),
    ("limit text", "GET", "/v1/keys?limit=ten", b"", {}, 400, "bad_request"),
    ("limit too big", "GET", "/v1/keys?limit=10001", b"", {}, 400, "bad_request"),
    ("prefix too long", "GET", f"/v1/keys?prefix={BIG_KEY}", b"", {}, 413, "key_too_large"),
    ("cursor with NUL", "GET", "/v1/keys?start_after=a%00", b"", {}, 400, "invalid_key"),
    ("batch not JSON", "POST", "/v1/batch", b"{nope", {}, 400, "bad_request"),
    ("batch empty body", "POST", "/v1/batch", b"", {}, 400, "bad_request"),
    ("batch is a list", "POST", "/v1/batch", b"[]", {}, 400, "bad_request"),
    ("batch nested deep", "POST", "/v1/batch", b"[" * 100_000, {}, 400, "bad_request"),
    (
        "batch gzip not gzip",
        "POST",
        "/v1/batch",
        b"notgzip",
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        400,
        "bad_request",
    ),
    (
        "PUT gzip not gzip",
        "PUT",
        "/v1/kv/gz",
        b"nope",
        {"Content-Encoding": "gzip"},
        400,
        "bad_request",
    ),
    (
        "batch value not ASCII",
        "POST",
        "/v1/batch",
        batch({"op": "put", "key": "a", "value": "\u00e9"}),
        {},
        400,
        "bad_request",
    ),
    ("batch ops not list", "POST", "/v1/batch", b'{"ops": 3}', {}, 400, "bad_request"),
    ("batch no ops", "POST", "/v1/batch", batch(), {}, 400, "bad_request"),
    (
        "batch bad op",
        "POST",
        "/v1/batch",
        batch({"op": "incr", "key": "a"}),
        {},
        400,
        "bad_request",
    ),
    ("batch op not object", "POST", "/v1/batch", batch("put"), {}, 400, "bad_request"),
    (
        "batch missing key",
        "POST",
        "/v1/batch",
        batch({"op": "put", "value": B64}),
        {},
        400,
        "invalid_key",
    ),
    (
        "batch empty key",
        "POST",
        "/v1/batch",
        batch({"op": "put", "key": "", "value": B64}),
        {},
        400,
        "invalid_key",
    ),
    (
        "batch key too long",
        "POST",
        "/v1/batch",
        batch({"op": "put", "key": BIG_KEY, "value": B64}),
        {},
        400,
        "invalid_key",
    ),
    (
        "batch bad base64",
        "POST",
        "/v1/batch",
        batch({"op": "put", "key": "a", "value": "***"}),
        {},
        400,
        "bad_request",
    ),
    (
        "batch value missing",
        "POST",
        "/v1/batch",
        batch({"op": "put", "key": "a"}),
        {},
        400,
        "bad_request",
    ),
    (
        "batch bad ttl",
        "POST",
        "/v1/batch",
        batch({"op": "put", "key": "a", "value": B64, "ttl": -1}),
        {},
        400,
        "bad_request",
    ),
    (
        "batch ttl superscript",
        "POST",
        "/v1/batch",
        batch({"op": "put", "key": "a", "value": B64, "ttl": "\u00b2"}),
        {},
        400,
        "bad_request",
    ),
    (
        "batch bad atomic",
        "POST",
        "/v1/batch",
        batch({"op": "delete", "key": "a"}, atomic="maybe"),
        {},
        400,
        "bad_request",
    ),
    (
        "batch bad consistency",
        "POST",
        "/v1/batch",
        batch({"op": "delete", "key": "a"}, consistency=2),
        {},
        400,
        "bad_request",
    ),
    (
        "batch too many ops",
        "POST",
        "/v1/batch",
        batch(*[{"op": "delete", "key": f"k{i}"} for i in range(10_001)]),
        {},
        413,
        "too_large",
    ),
    (
        "batch too many bytes",
        "POST",
        "/v1/batch",
        b" " * (16 * 1024 * 1024 + 1),
        {},
        413,
        "too_large",
    ),
    ("msgpack garbage", "POST", "/v1/batch", b"\xc1\xc1\xc1", MSGPACK, 400, "bad_request"),
    (
        "msgpack value not bytes",
        "POST",
        "/v1/batch",
        msgpack.packb({"ops": [{"op": "put", "key": "a", "value": 5}]}),
        MSGPACK,
        400,
        "bad_request",
    ),
    (
        "msgpack int map keys",
        "POST",
        "/v1/batch",
        msgpack.packb({1: 2}),
        MSGPACK,
        400,
        "bad_request",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_bad_request_gets_json_error(
    node: NodeProcess,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    data = io.BytesIO(body) if len(body) > 1 << 20 else body
    async with http.request(
        method, node.url + path, data=data, headers=headers, skip_auto_headers=["Content-Type"]
    ) as r:
        text = await r.text()
        assert r.status == status, text
        assert r.content_type == "application/json", text
        doc = json.loads(text)
    assert doc["error"] == code
    assert doc["message"]
    assert "Traceback" not in text
    async with http.get(node.url + "/readyz") as r:
        assert r.status == 200
    assert "Traceback" not in node.log()


async def test_garbage_on_the_socket_does_not_hurt(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    for garbage in [
        b"\x00\x01\x02\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\n",
    ]:
        _reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(garbage)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    # a client that sends half a body and vanishes
    _reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(b"PUT /v1/kv/half HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    async with http.get(node.url + "/readyz") as r:
        assert r.status == 200
    async with http.get(node.url + "/v1/kv/half") as r:
        assert r.status == 404  # the truncated write was not applied


async def test_many_missing_reads_do_not_leak_reader_slots(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    """The MDB_READERS_FULL trap: 404s after reads must not pin reader slots."""

    async def miss(i: int) -> int:
        async with http.get(f"{node.url}/v1/kv/missing-{i}") as r:
            return r.status

    for _ in range(10):
        assert set(await asyncio.gather(*(miss(i) for i in range(300)))) == {404}
    async with http.get(node.url + "/v1/status") as r:
        storage = (await r.json())["storage"]
    assert storage["readers_used"] < 16


TOKEN_AUTH = {"Authorization": "Bearer s3cret"}  # the conftest's token_node


async def refused(
    http: aiohttp.ClientSession, node: NodeProcess, path: str, body: bytes
) -> dict[str, Any]:
    """POST msgpack `body` to `path` with the token: a 400 JSON error, no traceback logged."""
    async with http.post(node.url + path, data=body, headers={**TOKEN_AUTH, **MSGPACK}) as r:
        assert r.status == 400, await r.text()
        doc: dict[str, Any] = await r.json()
    assert doc["error"] == "bad_request" and doc["message"]
    assert "Traceback" not in node.log()
    return doc


FAR = (1 << 64) - 1  # a record's timestamp no clock reaches: it would stop the node's clock


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/v1/apply", {"records": [[b"far", pack(FAR, 0, False, b"n0", b"v")]]}),
        ("/internal/v1/replicate", [[b"far", pack(FAR, 0, False, b"n0", b"v")]]),
        ("/admin/v1/apply", {"records": [[b"far", pack(FAR - 5, 0, True, b"n0", b"")]]}),
    ],
    ids=["apply", "replicate", "apply tombstone"],
)
async def test_a_record_far_in_the_future_is_refused_and_writes_go_on(
    token_node: NodeProcess, http: aiohttp.ClientSession, path: str, body: object
) -> None:
    """Taken, it moved the clock to 2**64 (and saved it): every later write, even
    after a restart, was a 500 (struct.error)."""
    doc = await refused(http, token_node, path, msgpack.packb(body))
    assert "ahead of this node's clock" in doc["message"]
    auth = TOKEN_AUTH
    for i in range(3):  # stamped by the node's clock, which did not move
        async with http.put(f"{token_node.url}/v1/kv/after{i}", data=b"x", headers=auth) as r:
            assert r.status in (200, 201), await r.text()
    async with http.get(f"{token_node.url}/v1/kv/far", headers=auth) as r:
        assert r.status == 404
    assert "Traceback" not in token_node.log()


async def test_a_gzip_body_is_stored_unzipped_whichever_lane_serves_it(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    """aiohttp decoded it and the fast lane did not: the same PUT stored different
    bytes depending on which served it (the fast lane now hands it over)."""
    body = gzip.compress(b"hello")
    for extra in ({}, {"X-Twice": "1"}):  # a header given twice: aiohttp serves it
        headers = {"Content-Encoding": "gzip", **extra}
        async with http.put(node.url + "/v1/kv/gz", data=body, headers=headers) as r:
            assert r.status in (200, 201), await r.text()
        async with http.get(node.url + "/v1/kv/gz") as r:
            assert await r.read() == b"hello"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/v1/apply", b"\x81\x90\x02"),  # a map keyed by an array
        ("/internal/v1/read", b"\x82\xa7records\x90\x80\x01"),  # ... by a map
        ("/admin/v1/ring/join", b"[" * 100_000),  # JSON nested too deep
    ],
    ids=["array key", "map key", "deep JSON"],
)
async def test_bodies_python_cannot_build_are_refused(
    token_node: NodeProcess, http: aiohttp.ClientSession, path: str, body: bytes
) -> None:
    await refused(http, token_node, path, body)


async def test_a_token_that_is_not_utf8_is_refused(token_node: NodeProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", token_node.port)
    writer.write(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 403"), head
    assert "Traceback" not in token_node.log()


GOOD = pack(1 << 40, 0, False, b"n0", b"v")


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        ("replicate", [[b"\xff\xfe", GOOD]]),  # stored, it made GET /v1/keys a 500
        ("replicate", [[b"", GOOD]]),
        ("replicate", [[b"a\x01", GOOD]]),
        ("scan", {"prefix": b"", "start_after": "x", "limit": 5}),
        ("scan", {"prefix": 2**63, "limit": 5}),
        ("scan", {"prefix": b"", "limit": float("inf")}),
        ("scan", {"prefix": b"", "limit": True}),
        ("digests", {"partitions": [[0]]}),
        ("bucket", {"partition": 70_000, "after": b""}),
        ("bucket", {"partition": -1, "after": b""}),
        ("bucket", {"partition": 0, "bucket": float("inf"), "after": b""}),
        ("bucket", {"partition": 0, "after": 2**63}),
    ],
)
async def test_peer_calls_of_the_wrong_shape_are_refused(
    token_node: NodeProcess, http: aiohttp.ClientSession, name: str, doc: object
) -> None:
    await refused(http, token_node, f"/internal/v1/{name}", msgpack.packb(doc))
    async with http.get(f"{token_node.url}/v1/keys", headers=TOKEN_AUTH) as r:
        assert r.status == 200


async def test_a_ring_member_url_nodes_cannot_call_is_refused(
    token_node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    """Installed, it failed the hint replay to it with a traceback every second."""
    headers = TOKEN_AUTH
    async with http.get(f"{token_node.url}/v1/ring", headers=headers) as r:
        ring = await r.json()
    for url in ("http://[::1", "ftp://n9:1", "n9:8080", "http://n9:99999"):
        members = [*ring["members"], {"id": "n9", "url": url}]
        doc = {**ring, "epoch": ring["epoch"] + 1, "members": members}
        async with http.post(
            f"{token_node.url}/admin/v1/ring/join", json=doc, headers=headers
        ) as r:
            body = await r.json()
            assert r.status == 400, body
            assert "member 'n9': url" in body["message"], body


@pytest.mark.parametrize(
    "request_head",
    [
        # a body that stops part way
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"ops": [',
        # a chunked body that stops part way
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"ops\r\n',
        # a chunk size aiohttp refuses, after a pause: it never ended the body
        None,
    ],
)
async def test_a_body_that_stops_arriving_is_a_408_and_the_node_serves_on(
    tmp_path: Path, request_head: bytes | None
) -> None:
    """Before `--body-timeout` the handler waited for the body until the
    client went away (design §7.9), holding a task and a connection."""
    proc = NodeProcess("n1", tmp_path, extra=["--body-timeout", "1s"])
    proc.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        if request_head is None:
            writer.write(
                b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Transfer-Encoding: chunked\r\n\r\n3\r\n{"o\r\n'
            )
            await writer.drain()
            await asyncio.sleep(0.3)
            request_head = b"zz\r\nnot a chunk\r\n"
        writer.write(request_head)
        await writer.drain()
        started = asyncio.get_running_loop().time()
        answer = await asyncio.wait_for(reader.read(4096), 15)
        waited = asyncio.get_running_loop().time() - started
        writer.close()
        assert answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 400")), answer
        if answer.startswith(b"HTTP/1.1 408"):
            assert b'"request_timeout"' in answer and 0.5 < waited < 10, (answer, waited)
        async with aiohttp.ClientSession() as http, http.get(proc.url + "/healthz") as resp:
            assert resp.status == 200
        assert "Traceback" not in proc.log()
    finally:
        proc.kill()
