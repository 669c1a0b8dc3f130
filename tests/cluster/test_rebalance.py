"""Membership change with real node processes: scale 3→5→3 under load, crashes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from ringkv import AsyncClient, Client
from ringkv.admin import Rebalancer
from ringkv.rebalance import NodeView, next_step
from ringkv.ring import Member, Ring, initial_ring

from nodeproc import TOKEN, Cluster, NodeProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(400)]

EXTRA = ["--drop-delay", "1s"]


@pytest.fixture
def rb() -> Iterator[Rebalancer]:
    with Rebalancer(TOKEN) as rebalancer:
        yield rebalancer


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster.create(tmp_path, extra=EXTRA)
    c.start()
    yield c
    c.kill_all()


def grow(c: Cluster, tmp_path: Path, count: int) -> list[NodeProcess]:
    """Start `count` empty nodes that find the cluster's ring from their peers."""
    new = [NodeProcess(f"n{len(c.nodes) + i}", tmp_path) for i in range(count)]
    everyone = c.nodes + new
    peers = ",".join(f"{n.node_id}={n.url}" for n in everyone)
    for n in new:
        n.peers = peers
        n.extra = list(c.nodes[0].extra)
        n.start()
    c.nodes.extend(new)
    return new


def members(nodes: list[NodeProcess]) -> list[Member]:
    return [Member(n.node_id, n.url) for n in nodes]


def digests(node: NodeProcess) -> dict[int, list[int]]:
    req = urllib.request.Request(
        node.url + "/internal/v1/digests",
        data=msgpack.packb({"partitions": list(range(256))}),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/msgpack"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        doc = msgpack.unpackb(r.read(), strict_map_key=False)
    return {int(p): d for p, d in doc.items() if any(d)}


def assert_placement(nodes: list[NodeProcess], ring: Ring, timeout_s: float = 30) -> None:
    """Each partition: its N owners hold identical data, and nobody else holds any."""
    deadline = time.monotonic() + timeout_s
    while True:
        table = {n.node_id: digests(n) for n in nodes}
        problems = []
        for part in range(ring.partitions):
            owners = ring.owners(part)
            if len({str(table[o].get(part)) for o in owners}) != 1:
                problems.append(f"partition {part}: owners differ")
            for other in set(table) - set(owners):
                if part in table[other]:
                    problems.append(f"partition {part}: {other} still holds data")
        if not problems:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{len(problems)} placement problems, e.g. {problems[:3]}")
        time.sleep(0.5)


class Load:
    """8 clients writing increasing counters to their own keys and reading them back.

    A read must never return less than the last acknowledged write of that key
    before the read started.
    """

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.acked: dict[str, int] = {}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.writes = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _client(self, cid: int, kv: AsyncClient) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            key = f"load-{cid}-{n % 50}"
            try:
                await kv.put(key, str(n))
            except Exception:
                await asyncio.sleep(0.05)
                continue
            self.acked[key] = n
            self.writes += 1
            floor = self.acked[key]
            try:
                got = await kv.get(key)
            except Exception:
                continue
            if got is None or int(got) < floor:
                self.errors.append(f"{key}: read {got!r} after acknowledged {floor}")

    async def _run(self) -> None:
        async with AsyncClient(self.urls, token=TOKEN, timeout=5) as kv:
            await asyncio.gather(*(self._client(i, kv) for i in range(8)))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)

    def verify(self, urls: list[str]) -> None:
        assert not self.errors, self.errors[:5]
        assert self.writes > 200, f"too little load to mean anything ({self.writes} writes)"
        with Client(urls, token=TOKEN) as kv:
            for key, n in self.acked.items():
                got = kv.get(key)
                assert got is not None and int(got) >= n, f"{key}: {got!r} < acknowledged {n}"


def test_scale_out_and_back_under_load(cluster: Cluster, tmp_path: Path, rb: Rebalancer) -> None:
    with Client([n.url for n in cluster.nodes], token=TOKEN) as kv:
        for start in range(0, 3000, 1000):
            kv.put_many({f"pre-{i}": str(i) for i in range(start, start + 1000)})
    with Load([n.url for n in cluster.nodes]) as load:
        time.sleep(1)
        grow(cluster, tmp_path, 2)
        five = rb.change(cluster.nodes[0].url, members(cluster.nodes))
        assert five.epoch == 2
        assert len(five.members) == 5
        time.sleep(1)
        three = rb.change(cluster.nodes[0].url, members(cluster.nodes[:3]))
        assert three.epoch == 3
        time.sleep(1)
    for gone in cluster.nodes[3:]:
        gone.stop()
    survivors = cluster.nodes[:3]
    load.verify([n.url for n in survivors])
    with Client([n.url for n in survivors], token=TOKEN) as kv:
        assert kv.ring().epoch == 3
        for i in range(0, 3000, 7):
            assert kv.get(f"pre-{i}") == str(i).encode()
    assert_placement(survivors, three)


def test_joining_node_killed_mid_stream_then_restarted(
    cluster: Cluster, tmp_path: Path, rb: Rebalancer
) -> None:
    with Client([n.url for n in cluster.nodes], token=TOKEN) as kv:
        for start in range(0, 20_000, 1000):
            kv.put_many({f"k{i}": b"x" * 200 for i in range(start, start + 1000)})
    (new,) = grow(cluster, tmp_path, 1)
    killed = threading.Event()

    def on_progress(step: object, docs: dict[str, dict[str, object]]) -> None:
        doc = docs.get(new.node_id, {})
        if not killed.is_set() and doc.get("streaming") and doc.get("partitions_streamed"):
            new.kill()
            killed.set()
            threading.Timer(0.5, new.start).start()

    ring = rb.change(cluster.nodes[0].url, members(cluster.nodes), on_progress=on_progress)
    assert killed.is_set(), "the joining node was never caught mid-stream"
    assert ring.epoch == 2
    with Client([n.url for n in cluster.nodes], token=TOKEN) as kv:
        for i in range(0, 20_000, 13):
            assert kv.get(f"k{i}") == b"x" * 200
    assert_placement(cluster.nodes, ring)


DRIVER = """
import sys
from ringkv.admin import Rebalancer
from ringkv.ring import Member
seed, token, *specs = sys.argv[1:]
members = [Member(s.split("=", 1)[0], s.split("=", 1)[1]) for s in specs]
Rebalancer(token).change(seed, members, on_progress=lambda s, d: print(s.action, flush=True))
"""


def test_driver_killed_mid_rebalance_and_rerun(cluster: Cluster, tmp_path: Path) -> None:
    with Client([n.url for n in cluster.nodes], token=TOKEN) as kv:
        for start in range(0, 10_000, 1000):
            kv.put_many({f"d{i}": str(i) for i in range(start, start + 1000)})
    grow(cluster, tmp_path, 1)
    specs = [f"{n.node_id}={n.url}" for n in cluster.nodes]
    cmd = [sys.executable, "-c", DRIVER, cluster.nodes[0].url, TOKEN, *specs]
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None
    for line in driver.stdout:
        if line.strip() in ("stream", "wait"):
            driver.kill()  # SIGKILL: the nodes are left with a joining ring
            break
    driver.wait(10)
    driver.stdout.close()
    with Client([n.url for n in cluster.nodes], token=TOKEN) as kv:
        kv.put("during", b"written while no driver runs")
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "done" in rerun.stdout
    with Client([n.url for n in cluster.nodes], token=TOKEN) as kv:
        ring = kv.ring()
        assert ring.epoch == 2
        assert len(ring.members) == 4
        assert kv.get("during") == b"written while no driver runs"
        for i in range(0, 10_000, 11):
            assert kv.get(f"d{i}") == str(i).encode()
    assert_placement(cluster.nodes, ring)


def test_planner_steps() -> None:
    ring = initial_ring([Member(f"n{i}", "x") for i in range(3)], 16, 3)
    target = Ring(2, 16, 3, ring.members, ring.owner_table)
    views = {m: NodeView(m, True, 1) for m in ring.member_ids}
    assert next_step(target, views).action == "join"
    views = {m: NodeView(m, True, 1, 2) for m in ring.member_ids}
    assert next_step(target, views).action == "stream"
    views = {m: NodeView(m, True, 1, 2, streaming=True) for m in ring.member_ids}
    assert next_step(target, views).action == "wait"
    views = {m: NodeView(m, True, 1, 2, in_sync=True) for m in ring.member_ids}
    assert next_step(target, views).action == "commit"
    views["n0"] = NodeView("n0", True, 2)
    step = next_step(target, views)
    assert (step.action, step.nodes) == ("commit", ("n1", "n2"))
    views = {m: NodeView(m, True, 2) for m in ring.member_ids}
    assert next_step(target, views).action == "done"
    views["n1"] = NodeView("n1", False)
    assert next_step(target, views).action == "wait"
    with pytest.raises(ValueError, match="another joining ring"):
        next_step(target, {"n0": NodeView("n0", True, 1, 5)})


def test_plan_tells_an_impossible_change_from_an_unchanged_one() -> None:
    from ringkv.rebalance import ImpossibleChangeError, UnchangedError, plan, refusal

    three = [Member(f"n{i}", "x") for i in range(3)]
    ring = initial_ring(three, 16, 3)
    with pytest.raises(UnchangedError):
        plan(ring, three)
    reason = refusal(ring, three[:2])
    assert reason == (
        "the ring would have 2 members, fewer than its replication factor N=3 "
        "(every key is kept on 3 members)"
    )
    with pytest.raises(ImpossibleChangeError, match="fewer than its replication factor"):
        plan(ring, three[:2])
    assert refusal(ring, []) is not None and refusal(ring, [three[0]] * 3) is not None
    assert refusal(ring, [*three, Member("n3", "x")]) is None
