"""HTTP API v1 against a real node process (DESIGN §3)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp
import msgpack
import pytest

from ringkv.versions import parse_version

from nodeproc import NodeProcess

pytestmark = pytest.mark.cluster


async def test_put_get_overwrite_delete(node: NodeProcess, http: aiohttp.ClientSession) -> None:
    url = f"{node.url}/v1/kv/greeting"
    async with http.put(url, data=b"hello") as r:
        assert r.status == 201
        assert await r.read() == b""
        v1 = parse_version(r.headers["X-Ringkv-Version"])
    async with http.get(url) as r:
        assert r.status == 200
        assert await r.read() == b"hello"
        assert parse_version(r.headers["X-Ringkv-Version"]) == v1
    async with http.put(url, data=b"world") as r:
        assert r.status == 200
        assert await r.read() == b"hello"  # the previous value
        v2 = parse_version(r.headers["X-Ringkv-Version"])
        assert v2 > v1
    async with http.delete(url) as r:
        assert r.status == 200
        assert await r.read() == b"world"
    async with http.get(url) as r:
        assert r.status == 404
        assert (await r.json())["error"] == "not_found"
    async with http.delete(url) as r:
        assert r.status == 404
    async with http.put(url, data=b"again") as r:
        assert r.status == 201  # a deleted key is created anew


async def test_binary_values_and_unicode_keys(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    value = bytes(range(256)) * 40
    for key in ["päth/with/slashes", "emoji-🔑", "sp ace", "q?x=1#frag", "{tag}:a"]:
        quoted = aiohttp.helpers.quote(key, safe="")  # type: ignore[attr-defined]
        async with http.put(f"{node.url}/v1/kv/{quoted}", data=value) as r:
            assert r.status == 201, key
        async with http.get(f"{node.url}/v1/kv/{quoted}") as r:
            assert r.status == 200, key
            assert await r.read() == value
    async with http.get(f"{node.url}/v1/keys") as r:
        keys = (await r.json())["keys"]
    assert keys == sorted(["päth/with/slashes", "emoji-🔑", "sp ace", "q?x=1#frag", "{tag}:a"])


async def test_empty_value_is_a_value(node: NodeProcess, http: aiohttp.ClientSession) -> None:
    async with http.put(f"{node.url}/v1/kv/empty", data=b"") as r:
        assert r.status == 201
    async with http.get(f"{node.url}/v1/kv/empty") as r:
        assert r.status == 200
        assert await r.read() == b""


async def test_ttl_expires(node: NodeProcess, http: aiohttp.ClientSession) -> None:
    async with http.put(f"{node.url}/v1/kv/short?ttl=1", data=b"x") as r:
        assert r.status == 201
    async with http.put(f"{node.url}/v1/kv/long?ttl=3600", data=b"y") as r:
        assert r.status == 201
    async with http.get(f"{node.url}/v1/kv/short") as r:
        assert r.status == 200
    await asyncio.sleep(1.3)
    async with http.get(f"{node.url}/v1/kv/short") as r:
        assert r.status == 404
    async with http.get(f"{node.url}/v1/kv/long") as r:
        assert r.status == 200
    async with http.get(f"{node.url}/v1/keys") as r:
        assert (await r.json())["keys"] == ["long"]
    # the sweeper (every 200 ms in tests) purges the expired record from storage
    for _ in range(50):
        async with http.get(f"{node.url}/v1/status") as r:
            if (await r.json())["storage"]["entries"] == 1:
                break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("expired key was not purged")


async def test_keys_pagination_prefix_and_cursor(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    written = {f"user:{i:04d}" for i in range(250)} | {f"order:{i}" for i in range(20)}
    ops = [{"op": "put", "key": k, "value": base64.b64encode(b"v").decode()} for k in written]
    async with http.post(f"{node.url}/v1/batch", json={"ops": ops}) as r:
        assert r.status == 200, await r.text()
    async with http.delete(f"{node.url}/v1/kv/user:0100") as r:
        assert r.status == 200
    written.discard("user:0100")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"prefix": "user:", "limit": "100"}
        if cursor:
            params["start_after"] = cursor
        async with http.get(f"{node.url}/v1/keys", params=params) as r:
            assert r.status == 200
            page = await r.json()
        pages += 1
        assert len(page["keys"]) <= 100
        seen += page["keys"]
        cursor = page["next"]
        if cursor is None:
            break
        assert pages < 10
    assert seen == sorted(k for k in written if k.startswith("user:"))
    assert pages == 3
    async with http.get(f"{node.url}/v1/keys", params={"limit": "10000"}) as r:
        assert (await r.json()) == {"keys": sorted(written), "next": None}


async def test_batch_json_and_msgpack(node: NodeProcess, http: aiohttp.ClientSession) -> None:
    body = {
        "ops": [
            {"op": "put", "key": "a", "value": base64.b64encode(b"1").decode()},
            {"op": "put", "key": "b", "value": base64.b64encode(b"2").decode(), "ttl": 60},
            {"op": "delete", "key": "missing"},
        ]
    }
    async with http.post(f"{node.url}/v1/batch", json=body) as r:
        assert r.status == 200
        doc = await r.json()
    assert [x["status"] for x in doc["results"]] == [201, 201, 404]
    packed = msgpack.packb(
        {"ops": [{"op": "put", "key": "a", "value": b"\x00\xff"}, {"op": "delete", "key": "b"}]}
    )
    headers = {"Content-Type": "application/msgpack"}
    async with http.post(f"{node.url}/v1/batch", data=packed, headers=headers) as r:
        assert r.status == 200
        assert r.content_type == "application/msgpack"
        out = msgpack.unpackb(await r.read())
    assert [(x["status"], x["previous"]) for x in out["results"]] == [(200, b"1"), (200, b"2")]
    async with http.get(f"{node.url}/v1/kv/a") as r:
        assert await r.read() == b"\x00\xff"


async def test_atomic_batch_needs_one_partition(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    ok = {
        "atomic": True,
        "ops": [
            {"op": "put", "key": "user:{42}:name", "value": base64.b64encode(b"ann").decode()},
            {"op": "put", "key": "user:{42}:mail", "value": base64.b64encode(b"a@x").decode()},
        ],
    }
    async with http.post(f"{node.url}/v1/batch", json=ok) as r:
        assert r.status == 200
        assert (await r.json())["atomic"] is True
    # 40 unrelated keys cannot all fall in one of 256 partitions
    bad = {
        "atomic": True,
        "ops": [
            {"op": "put", "key": f"k{i}", "value": base64.b64encode(b"v").decode()}
            for i in range(40)
        ],
    }
    async with http.post(f"{node.url}/v1/batch", json=bad) as r:
        assert r.status == 400
        assert (await r.json())["error"] == "not_single_partition"
    async with http.get(f"{node.url}/v1/kv/k0") as r:
        assert r.status == 404  # nothing of the refused batch was written


async def test_status_ring_health_metrics(node: NodeProcess, http: aiohttp.ClientSession) -> None:
    for key in ("x", "gone"):
        async with http.put(f"{node.url}/v1/kv/{key}", data=b"1") as r:
            assert r.status == 201
    async with http.delete(f"{node.url}/v1/kv/gone") as r:
        assert r.status == 200
    async with http.get(f"{node.url}/v1/status") as r:
        status = await r.json()
    assert status["node_id"] == "n1"
    assert status["epoch"] == 1
    assert status["partitions"] == 256
    assert status["partitions_owned"] == 256
    assert status["durability"] == "fsync"
    storage = status["storage"]
    assert (storage["entries"], storage["live"], storage["tombstones"]) == (2, 1, 1)
    assert {"last_round_at_ms", "last_round_duration_ms", "partitions_out_of_sync"} <= set(
        status["anti_entropy"]
    )
    async with http.get(f"{node.url}/v1/ring") as r:
        ring = await r.json()
        assert r.headers["X-Ringkv-Epoch"] == "1"
    assert ring["members"] == [{"id": "n1", "url": node.url, "zone": ""}]
    assert len(ring["owners"]) == 256
    async with http.get(f"{node.url}/healthz") as r:
        assert r.status == 200
    async with http.get(f"{node.url}/readyz") as r:
        assert (await r.json()) == {"ready": True}
    async with http.get(f"{node.url}/metrics") as r:
        text = await r.text()
    assert 'ringkv_requests_total{method="PUT",route="/v1/kv/{key}",status="201"} 2.0' in text
    assert "ringkv_commit_batch_ops_count" in text
    assert "ringkv_request_duration_seconds_bucket" in text
    assert "# TYPE ringkv_coordinated_requests_total counter" in text
    assert 'ringkv_coordinated_requests_total{kind="owner"} 3.0' in text
    assert "ringkv_storage_tombstones 1.0" in text


async def test_concurrent_writes_share_fsyncs(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    async def one(i: int) -> int:
        async with http.put(f"{node.url}/v1/kv/c{i}", data=b"v") as r:
            return r.status

    assert set(await asyncio.gather(*(one(i) for i in range(200)))) == {201}
    async with http.get(f"{node.url}/metrics") as r:
        text = await r.text()
    lines = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("ringkv_commit_batch")
    )
    commits = float(lines["ringkv_commit_batch_ops_count"])
    ops = float(lines["ringkv_commit_batch_ops_sum"])
    assert ops >= 200
    assert commits < ops  # some transactions carried more than one write


async def test_sigterm_drains_and_restart_keeps_data(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    for i in range(20):
        async with http.put(f"{node.url}/v1/kv/k{i}", data=str(i).encode()) as r:
            assert r.status == 201
    assert node.stop() == 0
    assert "storage closed" in node.log()
    node.start()
    for i in range(20):
        async with http.get(f"{node.url}/v1/kv/k{i}") as r:
            assert await r.read() == str(i).encode()
    async with http.get(f"{node.url}/v1/kv/k0") as r:
        version = parse_version(r.headers["X-Ringkv-Version"])
    async with http.put(f"{node.url}/v1/kv/k0", data=b"new") as r:
        assert parse_version(r.headers["X-Ringkv-Version"]) > version  # HLC survives restarts


async def test_json_errors_never_tracebacks(node: NodeProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{node.url}/nope") as r:
        assert r.status == 404
        assert json.loads(await r.text())["error"] == "not_found"


async def test_expiry_is_told_on_get_and_taken_absolute_on_put(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    """`X-Ringkv-Expires` (unix ms) on GET; `?expires=` and a batch op's `expires`
    store that same moment (what `ringkv dump`/`load` carry across)."""
    now_ms = time.time_ns() // 1_000_000
    async with http.put(f"{node.url}/v1/kv/t?ttl=100", data=b"v") as r:
        assert r.status == 201
    async with http.get(f"{node.url}/v1/kv/t") as r:
        expires = int(r.headers["X-Ringkv-Expires"])
    assert now_ms + 99_000 <= expires <= now_ms + 101_000 + 5_000
    async with http.put(f"{node.url}/v1/kv/plain", data=b"v") as r:
        assert r.status == 201
    async with http.get(f"{node.url}/v1/kv/plain") as r:
        assert "X-Ringkv-Expires" not in r.headers  # no TTL, no header
    at = now_ms + 50_000
    async with http.put(f"{node.url}/v1/kv/abs?expires={at}", data=b"v") as r:
        assert r.status == 201
    async with http.get(f"{node.url}/v1/kv/abs") as r:
        assert r.headers["X-Ringkv-Expires"] == str(at)
    doc = {"ops": [{"op": "put", "key": "b", "value": "dg==", "expires": at + 1}]}
    async with http.post(f"{node.url}/v1/batch", json=doc) as r:
        assert r.status == 200
    async with http.get(f"{node.url}/v1/kv/b") as r:
        assert r.headers["X-Ringkv-Expires"] == str(at + 1)
    async with http.put(f"{node.url}/v1/kv/gone?expires={now_ms - 1000}", data=b"v") as r:
        assert r.status == 201  # stored already expired: reads as absent
    async with http.get(f"{node.url}/v1/kv/gone") as r:
        assert r.status == 404
    for query, words in [
        (f"ttl=5&expires={at}", "not both"),
        ("expires=1700000000", "looks like seconds"),
        (f"expires={now_ms + 11 * 365 * 86_400_000}", "10 years"),
        ("expires=soon", "milliseconds"),
    ]:
        async with http.put(f"{node.url}/v1/kv/bad?{query}", data=b"v") as r:
            assert r.status == 400, query
            assert words in (await r.json())["message"], query
