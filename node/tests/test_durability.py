"""Every acknowledged write survives SIGKILL (fsync'd group commit)."""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from dataclasses import dataclass, field

import aiohttp
import pytest

from nodeproc import NodeProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

KILLS = 12
WRITERS = 24
HOT_KEYS = 8  # overwritten again and again: the last acknowledged value must win


@dataclass
class Attempt:
    value: bytes
    start: float
    end: float = math.inf  # when it was acknowledged, or known to have failed
    acked: bool = False


@dataclass
class History:
    """Every write attempted on each key, with when it started and ended.

    Concurrent writers race on the hot keys, so the order attempts were made
    is not the order the node applied them. The legal final values of a key
    are those of attempts no acknowledged write superseded: a write that
    started after an attempt ended was stamped later and must win over it.
    """

    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    acks: int = 0

    def attempt(self, key: str, value: bytes) -> Attempt:
        a = Attempt(value, time.monotonic())
        self.attempts.setdefault(key, []).append(a)
        return a

    def done(self, a: Attempt, acked: bool) -> None:
        a.end = time.monotonic()
        a.acked = acked
        self.acks += acked

    def acked_keys(self) -> list[str]:
        return [k for k, attempts in self.attempts.items() if any(a.acked for a in attempts)]

    def acceptable(self, key: str) -> list[bytes]:
        attempts = self.attempts[key]
        acked_starts = [b.start for b in attempts if b.acked]
        return [a.value for a in attempts if not any(s > a.end for s in acked_starts)]


async def writer(
    http: aiohttp.ClientSession, url: str, wid: int, hist: History, stop: asyncio.Event
) -> None:
    seq = 0
    rng = random.Random(wid)
    while not stop.is_set():
        seq += 1
        key = f"hot-{rng.randrange(HOT_KEYS)}" if seq % 3 == 0 else f"w{wid}-{seq}"
        value = f"{wid}:{seq}:{os.urandom(4).hex()}".encode() * rng.randint(1, 50)
        attempt = hist.attempt(key, value)
        try:
            async with http.put(f"{url}/v1/kv/{key}", data=value) as r:
                hist.done(attempt, acked=r.status in (200, 201))
                if r.status not in (200, 201):
                    return
        except (TimeoutError, aiohttp.ClientError):
            hist.done(attempt, acked=False)
            return  # the node died under us


async def verify(http: aiohttp.ClientSession, url: str, hist: History) -> int:
    sem = asyncio.Semaphore(32)

    async def check(key: str) -> None:
        async with sem, http.get(f"{url}/v1/kv/{key}") as r:
            assert r.status == 200, f"acknowledged key {key} lost ({r.status})"
            body = await r.read()
        assert body in hist.acceptable(key), f"key {key}: acknowledged value lost"

    keys = hist.acked_keys()
    await asyncio.gather(*(check(k) for k in keys))
    return len(keys)


async def test_acknowledged_writes_survive_sigkill(node: NodeProcess) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    hist = History()
    timeout = aiohttp.ClientTimeout(total=10)
    for round_no in range(KILLS):
        async with aiohttp.ClientSession(timeout=timeout) as http:
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(writer(http, node.url, w, hist, stop)) for w in range(WRITERS)
            ]
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            node.kill()  # SIGKILL while writes are in flight
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        node.start()
        async with aiohttp.ClientSession(timeout=timeout) as http:
            checked = await verify(http, node.url, hist)
        assert checked > 0, f"round {round_no}: nothing was acknowledged (seed {seed})"
    assert hist.acks > 1000, f"too few writes to mean anything: {hist.acks} (seed {seed})"
