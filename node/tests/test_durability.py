"""Every acknowledged write survives SIGKILL (fsync'd group commit)."""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field

import aiohttp
import pytest

from nodeproc import NodeProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

KILLS = 12
WRITERS = 24
HOT_KEYS = 8  # overwritten again and again: the last acknowledged value must win


@dataclass
class History:
    """Per key: every value attempted in order, and how many were acknowledged."""

    attempts: dict[str, list[bytes]] = field(default_factory=dict)
    acked_upto: dict[str, int] = field(default_factory=dict)  # index of last acked attempt
    acks: int = 0

    def attempt(self, key: str, value: bytes) -> int:
        values = self.attempts.setdefault(key, [])
        values.append(value)
        return len(values) - 1

    def ack(self, key: str, index: int) -> None:
        self.acks += 1
        if index > self.acked_upto.get(key, -1):
            self.acked_upto[key] = index

    def acceptable(self, key: str) -> list[bytes]:
        """Values a read may return: the last acked one or any later attempt."""
        return self.attempts[key][self.acked_upto[key] :]


async def writer(
    http: aiohttp.ClientSession, url: str, wid: int, hist: History, stop: asyncio.Event
) -> None:
    seq = 0
    rng = random.Random(wid)
    while not stop.is_set():
        seq += 1
        key = f"hot-{rng.randrange(HOT_KEYS)}" if seq % 3 == 0 else f"w{wid}-{seq}"
        value = f"{wid}:{seq}:{os.urandom(4).hex()}".encode() * rng.randint(1, 50)
        index = hist.attempt(key, value)
        try:
            async with http.put(f"{url}/v1/kv/{key}", data=value) as r:
                if r.status in (200, 201):
                    hist.ack(key, index)
                else:
                    return
        except (TimeoutError, aiohttp.ClientError):
            return  # the node died under us


async def verify(http: aiohttp.ClientSession, url: str, hist: History) -> int:
    sem = asyncio.Semaphore(32)

    async def check(key: str) -> None:
        async with sem, http.get(f"{url}/v1/kv/{key}") as r:
            assert r.status == 200, f"acknowledged key {key} lost ({r.status})"
            body = await r.read()
        assert body in hist.acceptable(key), f"key {key}: acknowledged value lost"

    keys = list(hist.acked_upto)
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
