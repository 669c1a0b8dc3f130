"""Both clients against a real 3-node cluster (N=3, or N=2 where routing shows)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import msgpack
import pytest

from ringkv import AsyncClient, Client, NotEnoughReplicasError, RetryPolicy, errors
from ringkv.cli import main as cli_main
from ringkv.ring import Ring

from nodeproc import TOKEN, Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


def make(tmp: Path, name: str, extra: list[str] | None = None) -> Cluster:
    c = Cluster.create(tmp / name, extra=extra)
    c.start()
    return c


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = make(tmp_path, "a")
    yield c
    c.kill_all()


def seeds(c: Cluster) -> list[str]:
    return [n.url for n in c.nodes]


def forwarded(c: Cluster) -> float:
    total = 0.0
    for node in c.nodes:
        with urllib.request.urlopen(node.url + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith('ringkv_coordinated_requests_total{kind="forwarded"}'):
                    total += float(line.split()[-1])
    return total


def test_sync_client_does_everything(cluster: Cluster) -> None:
    with Client(seeds(cluster)[:1], token=TOKEN) as kv:
        assert kv.put("a", b"1") is None
        assert kv.put("a", "2") == b"1"
        assert kv.get("a") == b"2"
        assert kv.get("a", consistency="all") == b"2"
        assert kv.get("missing") is None
        assert kv.put("t", b"x", ttl=1, consistency="one") is None
        assert kv.delete("a") == b"2"
        assert kv.delete("a") is None
        kv.put_many({f"user:{i:03d}": str(i) for i in range(120)})
        assert kv.keys(prefix="user:") == [f"user:{i:03d}" for i in range(120)]
        assert kv.keys(prefix="user:", start_after="user:100", limit=5) == [
            f"user:{i}" for i in range(101, 106)
        ]
        assert list(kv.iter_keys(prefix="user:", page_size=7))[-1] == "user:119"
        results = kv.delete_many(["user:000", "nope"])
        assert [r["status"] for r in results] == [200, 404]
        with kv.batch(atomic=True) as b:
            b.put("cart:{7}:a", b"x").put("cart:{7}:b", b"y").delete("cart:{7}:c")
        assert [r["status"] for r in b.results or []] == [201, 201, 404]
        assert kv.ring().epoch == 1
        assert kv.status()["ready"] is True
        time.sleep(1.1)
        assert kv.get("t") is None  # expired


async def test_async_client_does_everything(cluster: Cluster) -> None:
    async with AsyncClient(seeds(cluster), token=TOKEN) as kv:
        assert await kv.put("a", b"1") is None
        assert await kv.put("a", b"2") == b"1"
        assert await kv.get("a") == b"2"
        assert await kv.get("missing") is None
        assert await kv.delete("a") == b"2"
        assert await kv.delete("a") is None
        await kv.put_many({f"k{i:02d}": b"v" for i in range(30)}, ttl=600)
        assert await kv.keys(prefix="k", limit=3) == ["k00", "k01", "k02"]
        assert [k async for k in kv.iter_keys(prefix="k", page_size=4)][-1] == "k29"
        await kv.delete_many([f"k{i:02d}" for i in range(30)])
        assert await kv.keys(prefix="k") == []
        async with kv.batch() as b:
            b.put("x", b"1").put("y", b"2")
        assert [r["status"] for r in b.results or []] == [201, 201]
        assert (await kv.ring()).epoch == 1
        assert (await kv.status())["node_id"] == "n0"
        results = await asyncio.gather(*(kv.put(f"c{i}", b"v") for i in range(200)))
        assert results == [None] * 200


def test_puts_keep_succeeding_while_a_node_is_killed(cluster: Cluster) -> None:
    policy = RetryPolicy(attempts=6, backoff_s=0.05)
    with Client(seeds(cluster), token=TOKEN, timeout=3, retry=policy) as kv:
        killer = threading.Timer(0.5, cluster.nodes[1].kill)
        killer.start()
        try:
            for i in range(1000):
                kv.put(f"stream-{i}", str(i))
        finally:
            killer.cancel()
        assert cluster.nodes[1].proc is not None
        assert cluster.nodes[1].proc.poll() is not None, "the node was not killed mid-stream"
        for i in range(0, 1000, 37):
            assert kv.get(f"stream-{i}") == str(i).encode()


async def test_async_puts_survive_a_node_kill(cluster: Cluster) -> None:
    async with AsyncClient(seeds(cluster), token=TOKEN, timeout=3) as kv:
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, cluster.nodes[2].kill)
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await kv.put(f"a-{i}", str(i))

        await asyncio.gather(*(one(i) for i in range(1000)))
        assert await kv.get("a-999") == b"999"


def test_quorum_errors_reach_the_caller(cluster: Cluster) -> None:
    cluster.nodes[1].kill()
    cluster.nodes[2].kill()
    with (
        Client(seeds(cluster)[:1], token=TOKEN, retry=RetryPolicy(attempts=4)) as kv,
        pytest.raises(NotEnoughReplicasError) as info,
    ):
        kv.put("x", b"1")
    assert info.value.needed == 2


def install_ring(c: Cluster, ring: Ring) -> None:
    body = msgpack.packb(ring.to_dict())
    for node in c.nodes:
        req = urllib.request.Request(
            node.url + "/internal/v1/install-ring",
            data=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/msgpack"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200


def test_routes_to_owners_and_follows_an_epoch_change(tmp_path: Path) -> None:
    c = make(tmp_path, "n2", extra=["--replication-factor", "2"])
    try:
        with Client(seeds(c)[:1], token=TOKEN) as kv:
            for i in range(200):
                kv.put(f"r{i}", b"v")
                assert kv.get(f"r{i}") == b"v"
            assert forwarded(c) == 0  # every request went straight to an owner
            old = kv.ring()
            # epoch 2: same members, every partition's owners rotated to other nodes
            ids = list(old.member_ids)
            table = tuple(
                tuple(ids[(ids.index(o) + 1) % 3] for o in owners) for owners in old.owner_table
            )
            new = Ring(2, old.partitions, old.replication_factor, old.members, table)
            install_ring(c, new)
            before = forwarded(c)
            for i in range(200):
                kv.put(f"s{i}", b"w")
                assert kv.get(f"s{i}") == b"w"
            assert kv.ring(refresh=False).epoch == 2
            # at most the first request went to a former owner; then the client knew
            assert forwarded(c) - before <= 1
    finally:
        c.kill_all()


def test_dump_and_load_into_a_fresh_cluster(tmp_path: Path) -> None:
    src = make(tmp_path, "src")
    dst = make(tmp_path, "dst")
    try:
        with Client(seeds(src), token=TOKEN) as kv:
            for start in range(0, 10_000, 1000):
                kv.put_many(
                    {f"d:{i:05d}": f"value-{i}".encode() * 3 for i in range(start, start + 1000)}
                )
            kv.put("binary", bytes(range(256)))
        out = io.StringIO()
        with redirect_stdout(out):
            assert cli_main(["dump", "--url", src.nodes[0].url, "--token", TOKEN, "--quiet"]) == 0
        lines = out.getvalue().splitlines()
        assert len(lines) == 10_001
        dump_file = tmp_path / "dump.jsonl"
        dump_file.write_text(out.getvalue())
        code = cli_main(
            ["load", str(dump_file), "--url", dst.nodes[1].url, "--token", TOKEN, "--quiet"]
        )
        assert code == 0
        with Client(seeds(dst), token=TOKEN) as kv:
            keys = kv.keys()
            assert len(keys) == 10_001
            for line in lines[::97]:
                doc = json.loads(line)
                assert kv.get(doc["key"]) is not None
            assert kv.get("binary") == bytes(range(256))
            assert kv.get("d:09999") == b"value-9999" * 3
    finally:
        src.kill_all()
        dst.kill_all()


def test_put_many_into_nodes_of_the_old_batch_limit_sends_smaller_calls(tmp_path: Path) -> None:
    """Nodes of an earlier version take 1,000 ops a batch (here: started with
    `--max-batch-ops 1000`); this client sends up to 10,000. Each client
    refuses nothing the nodes would have taken: a refused call (413, before
    any write) is sent again in calls of 1,000, and every key is written, its
    answer in order. An atomic batch over their limit is still refused."""
    c = make(tmp_path, "old", ["--max-batch-ops", "1000"])
    try:
        items = {f"old:{i:05d}": f"v{i}".encode() for i in range(2500)}
        with Client(seeds(c), token=TOKEN) as kv:
            results = kv.put_many(items)
            assert len(results) == 2500 and all(r["status"] == 201 for r in results)
            assert kv.get("old:02499") == b"v2499"
            atomic = kv.batch(atomic=True)
            for i in range(1001):
                atomic.put(f"{{t}}:{i}", b"x")
            with pytest.raises(errors.BadRequestError, match="the limit is 1000"):
                atomic.execute()

        async def deletes() -> list[dict[str, object]]:
            async with AsyncClient(seeds(c), token=TOKEN) as akv:
                return await akv.delete_many(list(items))

        answers = asyncio.run(deletes())
        assert [a["status"] for a in answers] == [200] * 2500
        with Client(seeds(c), token=TOKEN) as kv:
            assert kv.keys(prefix="old:") == []
    finally:
        c.kill_all()


def test_a_dump_read_as_a_backup_reads_is_the_dump_read_key_by_key(tmp_path: Path) -> None:
    """With the token, `dump` reads partitions as a backup does; with
    `--no-direct` (or no token) it reads key by key. Both give the same
    records: values, versions and expiry of the live keys under the prefix
    (an expired one is not), and with `--deleted` the same deleted keys
    after them."""
    c = make(tmp_path, "d")
    try:
        with Client(seeds(c), token=TOKEN) as kv:
            kv.put_many({f"p:{i:04d}": f"v{i}".encode() for i in range(1500)})
            kv.put_many({f"other:{i}": b"x" for i in range(50)})
            kv.put("p:ttl", b"t", ttl=3600)
            kv.put("p:soon", b"s", ttl=1)
            for i in range(0, 1500, 7):
                kv.delete(f"p:{i:04d}")
        time.sleep(1.2)  # p:soon expires

        def dump(*extra: str) -> tuple[list[dict[str, object]], str]:
            out, err = io.StringIO(), io.StringIO()
            argv = ["dump", "--url", c.nodes[0].url, "--token", TOKEN, "--quiet", *extra]
            with redirect_stdout(out), contextlib.redirect_stderr(err):
                assert cli_main(argv) == 0
            return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()

        fast, fast_said = dump("--prefix", "p:", "--deleted")
        slow, slow_said = dump("--prefix", "p:", "--deleted", "--no-direct")
        assert fast_said == slow_said == "dumped 1286 keys and 215 deleted\n"
        live = [r for r in fast if not r.get("deleted")]
        assert sorted(live, key=lambda r: str(r["key"])) == [
            r for r in slow if not r.get("deleted")
        ]
        assert all(not r.get("deleted") for r in fast[: len(live)])  # the deleted come last
        gone = {str(r["key"]) for r in fast if r.get("deleted")}
        assert gone == {str(r["key"]) for r in slow if r.get("deleted")}
        assert "p:0007" in gone and "p:0001" not in gone
        assert "p:soon" not in {str(r["key"]) for r in fast}  # expired: neither live nor kept
        ttl = next(r for r in live if r["key"] == "p:ttl")
        assert isinstance(ttl["expires_ms"], int) and "@" in str(ttl["version"])
        assert not any(str(r["key"]).startswith("other:") for r in fast)
    finally:
        c.kill_all()
