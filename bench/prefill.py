"""Write key:0 .. key:N-1 (100-byte values) through /v1/batch so GET runs find them.

python bench/prefill.py http://127.0.0.1:7100 100000 [token]
"""

from __future__ import annotations

import asyncio
import base64
import sys

import aiohttp


async def main(url: str, keys: int, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    value = base64.b64encode(b"v" * 100).decode()
    sem = asyncio.Semaphore(4)

    async def batch(http: aiohttp.ClientSession, start: int) -> None:
        ops = [
            {"op": "put", "key": f"key:{i}", "value": value}
            for i in range(start, min(start + 1000, keys))
        ]
        async with sem, http.post(f"{url}/v1/batch", json={"ops": ops}) as r:
            if r.status != 200:
                raise SystemExit(f"prefill failed: {r.status} {await r.text()}")

    async with aiohttp.ClientSession(headers=headers) as http:
        await asyncio.gather(*(batch(http, s) for s in range(0, keys, 1000)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
