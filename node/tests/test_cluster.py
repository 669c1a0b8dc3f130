"""A replicated 3-node cluster of real processes (N=3, W=R=2)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import msgpack
import pytest

from nodeproc import AUTH, Cluster, NodeProcess

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster.create(tmp_path)
    c.start()
    yield c
    c.kill_all()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        headers=AUTH, timeout=aiohttp.ClientTimeout(total=20)
    ) as session:
        yield session


async def digests(http: aiohttp.ClientSession, node: NodeProcess) -> dict[int, list[int]]:
    body = msgpack.packb({"partitions": list(range(256))})
    async with http.post(
        f"{node.url}/internal/v1/digests",
        data=body,
        headers={"Content-Type": "application/msgpack"},
    ) as r:
        assert r.status == 200, await r.text()
        return {int(k): v for k, v in msgpack.unpackb(await r.read(), strict_map_key=False).items()}


async def converged(http: aiohttp.ClientSession, cluster: Cluster, timeout_s: float = 30) -> None:
    """Wait until every replica holds identical data (equal digests everywhere)."""
    deadline = time.monotonic() + timeout_s
    while True:
        all_digests = [await digests(http, n) for n in cluster.nodes]
        if all(d == all_digests[0] for d in all_digests):
            return
        if time.monotonic() > deadline:
            diff = sum(1 for p in range(256) if len({str(d.get(p)) for d in all_digests}) > 1)
            pytest.fail(f"replicas differ in {diff} partitions after {timeout_s}s")
        await asyncio.sleep(0.5)


async def put(http: aiohttp.ClientSession, node: NodeProcess, key: str, value: bytes, **q: str):  # type: ignore[no-untyped-def]
    async with http.put(f"{node.url}/v1/kv/{key}", data=value, params=q) as r:
        return r.status, await r.read()


async def get(http: aiohttp.ClientSession, node: NodeProcess, key: str, **q: str):  # type: ignore[no-untyped-def]
    async with http.get(f"{node.url}/v1/kv/{key}", params=q) as r:
        return r.status, await r.read()


async def all_replicas(http: aiohttp.ClientSession, cluster: Cluster, key: str) -> set[object]:
    answers: set[object] = set()
    for n in cluster.nodes:
        status, body = await get(http, n, key, consistency="one")
        answers.add((status, body) if status == 200 else status)
    return answers


async def eventually(probe: Callable[[], Awaitable[object]], want: object) -> None:
    deadline = time.monotonic() + 5
    while (got := await probe()) != want:
        assert time.monotonic() < deadline, f"still {got!r}, want {want!r}"
        await asyncio.sleep(0.02)


async def test_any_node_serves_any_key(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    a, b, c = cluster.nodes
    assert await put(http, a, "k", b"v1") == (201, b"")
    assert await get(http, b, "k") == (200, b"v1")
    assert await put(http, c, "k", b"v2") == (200, b"v1")  # previous value
    # every replica holds it (consistency=one reads locally; the third may lag a moment)
    await eventually(lambda: all_replicas(http, cluster, "k"), {(200, b"v2")})
    async with http.delete(f"{b.url}/v1/kv/k") as r:
        assert (r.status, await r.read()) == (200, b"v2")
    await eventually(lambda: all_replicas(http, cluster, "k"), {404})
    async with http.get(f"{a.url}/v1/status") as r:
        status = await r.json()
    assert status["members"] == ["n0", "n1", "n2"]
    assert status["partitions_owned"] == 256


async def test_keys_lists_everything_from_every_node(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    written = sorted(f"key:{i:05d}" for i in range(1200))
    sem = asyncio.Semaphore(32)

    async def one(i: int, key: str) -> None:
        async with sem:
            assert (await put(http, cluster.nodes[i % 3], key, key.encode()))[0] == 201

    await asyncio.gather(*(one(i, k) for i, k in enumerate(written)))
    for node in cluster.nodes:
        seen: list[str] = []
        cursor = None
        for _ in range(20):
            params = {"limit": "500", **({"start_after": cursor} if cursor else {})}
            async with http.get(f"{node.url}/v1/keys", params=params) as r:
                assert r.status == 200
                page = await r.json()
            seen += page["keys"]
            cursor = page["next"]
            if cursor is None:
                break
        assert seen == written


async def test_consistency_one_write_reaches_every_replica(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    assert (await put(http, cluster.nodes[0], "fast", b"x", consistency="one"))[0] == 201
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answers = [await get(http, n, "fast", consistency="one") for n in cluster.nodes]
        if all(a == (200, b"x") for a in answers):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"not on every replica: {answers}")


async def test_one_node_killed_then_converges(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    a, b, c = cluster.nodes
    c.kill()
    for i in range(300):
        assert (await put(http, a if i % 2 else b, f"d{i}", b"%d" % i))[0] == 201
    for i in range(0, 300, 7):
        assert await get(http, b, f"d{i}") == (200, b"%d" % i)
    async with http.get(f"{a.url}/v1/status") as r:
        assert (await r.json())["hints"]["backlog"].get("n2", 0) > 0
    c.start()
    await converged(http, cluster)
    for i in range(300):
        assert await get(http, c, f"d{i}", consistency="one") == (200, b"%d" % i)


async def test_stopped_node_catches_up(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    a, b, c = cluster.nodes
    c.signal(signal.SIGSTOP)
    try:
        for i in range(200):
            assert (await put(http, a if i % 2 else b, f"s{i}", b"v%d" % i))[0] == 201
    finally:
        c.signal(signal.SIGCONT)
    await converged(http, cluster)
    for i in range(200):
        assert await get(http, c, f"s{i}", consistency="one") == (200, b"v%d" % i)


async def test_whole_cluster_restart_keeps_everything(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    for i in range(200):
        assert (await put(http, cluster.nodes[i % 3], f"r{i}", b"%d" % i))[0] == 201
    for n in cluster.nodes:
        assert n.stop() == 0
    cluster.start()
    for i in range(200):
        assert await get(http, cluster.nodes[(i + 1) % 3], f"r{i}") == (200, b"%d" % i)


async def test_concurrent_writers_on_one_key_converge(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    values = {f"writer-{w}".encode() for w in range(32)}

    async def writer(w: int) -> int:
        status, _ = await put(http, cluster.nodes[w % 3], "contended", f"writer-{w}".encode())
        return status

    statuses = await asyncio.gather(*(writer(w) for w in range(32)))
    assert set(statuses) <= {200, 201}
    await converged(http, cluster)
    finals = {await get(http, n, "contended", consistency="one") for n in cluster.nodes}
    assert len(finals) == 1
    status, value = finals.pop()
    assert status == 200
    assert value in values


async def test_quorum_fails_clearly_when_two_nodes_are_down(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    a, b, c = cluster.nodes
    b.kill()
    c.kill()
    async with http.put(f"{a.url}/v1/kv/x", data=b"1") as r:
        assert r.status == 503
        doc = await r.json()
    assert doc["error"] == "not_enough_replicas"
    assert (doc["needed"], doc["answered"]) == (2, 1)
    assert (await put(http, a, "y", b"1", consistency="one"))[0] == 201
    async with http.get(f"{a.url}/v1/kv/y") as r:
        assert r.status == 503


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_random_kills_lose_no_acknowledged_write(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    acked: dict[str, bytes] = {}
    stop = asyncio.Event()
    counter = 0

    async def writer(w: int) -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1
            key, value = f"x{w}-{counter}", os.urandom(8).hex().encode()
            node = cluster.nodes[rng.randrange(3)]
            try:
                async with http.put(f"{node.url}/v1/kv/{key}", data=value) as r:
                    if r.status in (200, 201):
                        acked[key] = value
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.01)

    writers = [asyncio.create_task(writer(w)) for w in range(12)]
    kills = 0
    try:
        while kills < 20:
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            victim = cluster.nodes[rng.randrange(3)]
            victim.kill()
            kills += 1
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            victim.start()
    finally:
        stop.set()
        await asyncio.gather(*writers)
    assert len(acked) > 500, f"too few acknowledged writes ({len(acked)}, seed {seed})"
    await converged(http, cluster, timeout_s=60)
    sem = asyncio.Semaphore(32)

    async def check(key: str, value: bytes) -> None:
        async with sem:
            for node in cluster.nodes:
                got = await get(http, node, key, consistency="one")
                assert got == (200, value), f"{key} on {node.node_id}: {got} (seed {seed})"

    await asyncio.gather(*(check(k, v) for k, v in acked.items()))
