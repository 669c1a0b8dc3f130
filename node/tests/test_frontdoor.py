"""The fast lane on a real node: raw HTTP/1.1 on one socket, as clients really send it.

Order of pipelined answers, requests split across packets, the hand-over of
a connection to aiohttp in the middle of a conversation, `Connection: close`,
and metrics for what the fast lane answered.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ringkv_node.model.records import decode
from ringkv_node.model.wire import frame, take_frames
from ringkv_node.net.peerlink import PATH

from nodeproc import NodeProcess

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess("n1", tmp_path_factory.mktemp("frontdoor"))
    proc.start()
    yield proc
    proc.kill()


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> Answer:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Answer(status, headers, body)

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""


@pytest.fixture
async def conn(node: NodeProcess) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    yield Conn(reader, writer)
    writer.close()
    await writer.wait_closed()


def put(key: str, value: bytes, extra: str = "") -> bytes:
    head = f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(value)}\r\n{extra}\r\n"
    return head.encode() + value


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


async def test_pipelined_requests_are_answered_in_order(conn: Conn) -> None:
    await conn.send(
        put("pipe", b"one") + put("pipe", b"two") + get("/v1/kv/pipe") + get("/v1/kv/nope")
    )
    first, second, read, missing = [await conn.answer() for _ in range(4)]
    assert (first.status, first.body) == (201, b"")
    assert (second.status, second.body) == (200, b"one")  # the previous value
    assert (read.status, read.body) == (200, b"two")
    assert read.headers["x-ringkv-version"] == second.headers["x-ringkv-version"]
    assert read.headers["content-type"] == "application/octet-stream"
    assert missing.status == 404
    assert missing.body.startswith(b'{"error":"not_found"')
    for answer in (first, second, read, missing):
        assert answer.headers["x-ringkv-epoch"] == "1"
        assert "date" in answer.headers


async def test_a_request_split_into_single_bytes(conn: Conn) -> None:
    for byte in put("split", b"xyz"):
        await conn.send(bytes([byte]))
    assert (await conn.answer()).status == 201
    await conn.send(get("/v1/kv/split"))
    assert (await conn.answer()).body == b"xyz"


async def test_other_routes_hand_the_connection_to_aiohttp_mid_conversation(conn: Conn) -> None:
    await conn.send(put("mixed", b"v1"))
    assert (await conn.answer()).status == 201
    # /v1/status is aiohttp's; the key route after it rides the same connection
    await conn.send(get("/v1/status") + get("/v1/kv/mixed"))
    status, read = await conn.answer(), await conn.answer()
    assert status.status == 200
    assert b'"node_id":"n1"' in status.body
    assert (read.status, read.body) == (200, b"v1")
    assert read.headers["x-ringkv-epoch"] == "1"


async def test_a_chunked_put_is_answered_by_aiohttp(conn: Conn) -> None:
    await conn.send(
        b"PUT /v1/kv/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert (await conn.answer()).status == 201
    await conn.send(get("/v1/kv/chunked"))
    assert (await conn.answer()).body == b"abcde"


async def test_bad_key_and_bad_query_get_json_errors_and_the_connection_lives(conn: Conn) -> None:
    await conn.send(get("/v1/kv/%FF") + get("/v1/kv/a?consistency=most") + put("ok", b"1"))
    bad_key, bad_query, fine = [await conn.answer() for _ in range(3)]
    assert (bad_key.status, bad_query.status, fine.status) == (400, 400, 201)
    assert bad_key.body.startswith(b'{"error":"invalid_key"')
    assert bad_query.headers["content-type"] == "application/json"


async def test_connection_close_is_honoured(conn: Conn) -> None:
    await conn.send(get("/v1/kv/nope", "Connection: close\r\n"))
    answer = await conn.answer()
    assert answer.status == 404
    assert answer.headers["connection"] == "close"
    assert await conn.closed_by_server()


async def test_fast_lane_requests_are_in_the_metrics(conn: Conn) -> None:
    for _ in range(3):
        await conn.send(get("/v1/kv/metered"))
        assert (await conn.answer()).status == 404
    await conn.send(get("/metrics"))
    text = (await conn.answer()).body.decode()
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("ringkv_requests_total{")
        and 'route="/v1/kv/{key}"' in ln
        and 'method="GET"' in ln
        and 'status="404"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) >= 3


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = NodeProcess("busy", tmp_path, port=taken.getsockname()[1])
        done = subprocess.run(
            proc.command(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    assert done.returncode == 1
    assert "cannot listen on http://127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr


# -- peer links ------------------------------------------------------------------

TOKEN = "link-token"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess("s1", tmp_path_factory.mktemp("peerlink"), extra=["--token", TOKEN])
    proc.start()
    yield proc
    proc.kill()


def upgrade(token: str | None, what: str = "ringkv-peer/1", path: str = PATH) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: {what}\r\n"
        f"X-Ringkv-Node: tester\r\n{auth}\r\n"
    ).encode()


async def read_frames(conn: Conn, buf: bytearray, count: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for _ in range(100):
        if len(docs) >= count:
            return docs
        data = await asyncio.wait_for(conn.reader.read(65536), 10)
        assert data, "the node closed the link"
        buf += data
        docs += take_frames(buf)
    raise AssertionError("no answer")


async def open_raw(node: NodeProcess) -> Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    return Conn(reader, writer)


async def test_a_peer_link_answers_framed_calls(secured: NodeProcess) -> None:
    conn = await open_raw(secured)
    try:
        await conn.send(put("linked", b"v", f"Authorization: Bearer {TOKEN}\r\n"))
        assert (await conn.answer()).status == 201
        # the upgrade and the first call in one packet
        await conn.send(
            upgrade(TOKEN)
            + frame({"id": 7, "call": "read", "doc": [b"linked", b"none"], "epoch": 1})
        )
        switched = await conn.answer()
        assert switched.status == 101
        assert switched.headers["upgrade"] == "ringkv-peer/1"
        buf = bytearray()
        (doc,) = await read_frames(conn, buf, 1)
        assert doc["id"] == 7 and doc["epoch"] == 1
        found, missing = doc["ok"]
        assert decode(found).value == b"v" and missing is None
        # a malformed call is refused by an answer, and the link lives on
        await conn.send(
            frame({"id": 8, "call": "replicate", "doc": "nonsense"})
            + frame({"id": 9, "call": "digests", "doc": {"partitions": []}})
        )
        docs = await read_frames(conn, buf, 2)
        assert docs[0]["id"] == 8 and "error" in docs[0]
        assert docs[1] == {"id": 9, "ok": {}, "epoch": 1}
        # bytes that are not a frame end the link
        await conn.send(b"\xff\xff\xff\xffgarbage")
        assert await conn.closed_by_server()
    finally:
        conn.writer.close()
    assert "Traceback" not in secured.log()


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("wrong", 403)])
async def test_a_peer_link_needs_the_token(
    secured: NodeProcess, token: str | None, status: int
) -> None:
    conn = await open_raw(secured)
    try:
        await conn.send(upgrade(token))
        answer = await conn.answer()
        assert answer.status == status
        assert answer.headers["content-type"] == "application/json"
        assert await conn.closed_by_server()
    finally:
        conn.writer.close()


async def test_other_upgrades_are_aiohttps(secured: NodeProcess) -> None:
    conn = await open_raw(secured)
    try:
        await conn.send(upgrade(TOKEN, what="websocket", path="/internal/v1/ws"))
        answer = await conn.answer()
        assert answer.status == 404
        assert answer.body.startswith(b'{"error":"not_found"')
    finally:
        conn.writer.close()
