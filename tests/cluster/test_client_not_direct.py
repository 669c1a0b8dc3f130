"""`direct=False` (`ringkv --no-direct`, RINGKV_DIRECT=0) against a real 3-node cluster.

The client reaches the cluster through one forwarded port, as through
`kubectl port-forward svc/kv`: every request must go through it, and the one
node behind it coordinates every key (the others coordinate nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringkv import AsyncClient, Client

from nodeproc import AUTH, TOKEN, Cluster
from portforward import Forwarder

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

RINGKV = str(Path(sys.executable).parent / "ringkv")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster.create(tmp_path_factory.mktemp("notdirect"))
    c.start()
    yield c
    c.kill_all()


@pytest.fixture
def fwd(cluster: Cluster) -> Iterator[Forwarder]:
    f = Forwarder(("127.0.0.1", cluster.nodes[0].port)).start()
    yield f
    f.close()


def coordinated(c: Cluster) -> list[int]:
    out = []
    for node in c.nodes:
        req = urllib.request.Request(node.url + "/v1/status", headers=AUTH)
        with urllib.request.urlopen(req, timeout=5) as r:
            out.append(int(json.load(r)["requests"]["coordinated"]))
    return out


def test_every_request_goes_through_the_one_address(cluster: Cluster, fwd: Forwarder) -> None:
    before = coordinated(cluster)
    with Client(fwd.url, token=TOKEN, direct=False) as kv:
        for i in range(40):
            assert kv.put(f"nd:{i:02d}", f"v{i}") is None
        assert [kv.get(f"nd:{i:02d}") for i in range(40)] == [f"v{i}".encode() for i in range(40)]
        assert kv.keys(prefix="nd:") == [f"nd:{i:02d}" for i in range(40)]
        assert kv.delete("nd:00") == b"v0"
        kv.put_many({"nd:x": "1", "nd:y": "2"})
        assert kv.ring().epoch == 1  # asked of the seed, not of the members
    after = coordinated(cluster)
    assert after[0] - before[0] >= 81  # 40 puts, 40 gets, a delete (and the batch)
    assert after[1:] == before[1:], (before, after)  # nothing went to the others
    assert fwd.connections >= 1


async def test_the_async_client_too(cluster: Cluster, fwd: Forwarder) -> None:
    before = coordinated(cluster)
    async with AsyncClient([fwd.url], token=TOKEN, direct=False) as kv:
        for i in range(20):
            await kv.put(f"na:{i}", b"v")
            assert await kv.get(f"na:{i}") == b"v"
    after = coordinated(cluster)
    assert after[0] - before[0] == 40
    assert after[1:] == before[1:]


def test_direct_routing_goes_around_the_forwarded_address(cluster: Cluster, fwd: Forwarder) -> None:
    """The contrast: by default the client loads the ring and goes to the owners' own
    URLs, which a laptop behind a port-forward could not reach."""
    before = coordinated(cluster)
    with Client(fwd.url, token=TOKEN) as kv:
        for i in range(40):
            kv.put(f"dr:{i}", b"v")
    after = coordinated(cluster)
    assert sum(after[1:]) > sum(before[1:])


def ringkv(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    return subprocess.run(
        [RINGKV, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, "RINGKV_TOKEN": TOKEN, **env},
    )


def test_the_cli_honours_ringkv_direct(cluster: Cluster, fwd: Forwarder) -> None:
    env = {"RINGKV_URL": fwd.url, "RINGKV_DIRECT": "0"}
    before = coordinated(cluster)
    assert ringkv("put", "cli:k", "hello", **env).stdout == "created\n"
    assert ringkv("get", "cli:k", **env).stdout == "hello\n"
    assert ringkv("get", "cli:k", "--no-direct", RINGKV_URL=fwd.url).stdout == "hello\n"
    assert coordinated(cluster)[1:] == before[1:]

    status = ringkv("status", **env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "ring epoch 1: 256 partitions, N=3"
    assert lines[1].split()[:2] == ["n0", "ready"]
    assert lines[2] == "  not asked (direct routing off: only --url is reachable): n1, n2"
    doc = json.loads(ringkv("--json", "status", **env).stdout)
    assert [n["node_id"] for n in doc["nodes"]] == ["n0"] and doc["not_asked"] == ["n1", "n2"]
    # --direct wins over the variable: every member is asked again
    doc = json.loads(ringkv("--json", "status", "--direct", **env).stdout)
    assert [n["node_id"] for n in doc["nodes"]] == ["n0", "n1", "n2"] and doc["not_asked"] == []


def test_a_bad_ringkv_direct_is_bad_input(fwd: Forwarder) -> None:
    r = ringkv("get", "k", RINGKV_URL=fwd.url, RINGKV_DIRECT="maybe")
    assert r.returncode == 2
    assert r.stderr == (
        "ringkv: $RINGKV_DIRECT must be 1 or 0 (true/false, yes/no, on/off), not 'maybe'\n"
    )
