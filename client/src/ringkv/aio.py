"""`AsyncClient`: the asyncio shell around the sans-I/O core.

Sends over pooled keep-alive connections of its own (`_aiopool`, HTTP/1.1
by `_h11`), sleeps with `asyncio.sleep`. All decisions are in `_core`; the
methods mirror `Client`, and the set-up is theirs (`_base.ClientBase`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from typing import Any

from ringkv import _core, errors
from ringkv._aiopool import Pool
from ringkv._base import ClientBase
from ringkv._core import Call, Request, Response, Router, Send
from ringkv.errors import NotFoundError, TransportError
from ringkv.ring import Ring

__all__ = ["AsyncBatch", "AsyncClient"]


class AsyncClient(ClientBase):
    """An asyncio ringkv client; use `async with AsyncClient(...) as kv:`.

    Takes what `Client` takes, `direct=False` included."""

    POOL_SIZE = 64

    _router: Router | None
    _pool: Pool | None

    def _start(self) -> None:
        self._router = None  # resolved on first use, on the running loop
        self._pool = None

    async def _ready(self) -> Router:
        if self._router is None:
            loop = asyncio.get_running_loop()
            resolved: dict[tuple[str, int], list[str]] = {}
            for host, port in _core.service_names(self._target):
                try:
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    raise TransportError(f"cannot resolve {host}: {exc}") from exc
                resolved[(host, port)] = sorted({str(i[4][0]) for i in infos})
            seeds = _core.expand_seeds(self._target, lambda h, p: resolved.get((h, p), []))
            self._router = Router(seeds, direct=self._direct)
        if self._pool is None:
            self._pool = Pool(self._pool_size, self._timeout)
        return self._router

    async def _send(self, req: Request) -> Response:
        assert self._pool is not None
        try:
            resp = await self._pool.request(req.method, req.url, req.body, req.headers)
        except TimeoutError as exc:
            raise errors.TimeoutError(
                f"{req.method} {req.url}: no answer in {self._timeout}s"
            ) from exc
        except OSError as exc:  # refused, reset, closed early
            raise TransportError(f"{req.method} {req.url}: {exc!r}") from exc
        return Response(resp.status, resp.headers, resp.body)

    async def _drive(self, gen: Generator[_core.Action, Any, Any]) -> Any:
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                action = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            if isinstance(action, Send):
                try:
                    value = await self._send(action.request)
                except TransportError as exc:
                    error = exc
            else:
                await asyncio.sleep(action.seconds)

    async def _call(self, call: Call, base_url: str | None = None) -> Response:
        router = await self._ready()
        resp: Response = await self._drive(self._steps(call, router, base_url))
        return resp

    # -- keys ----------------------------------------------------------------

    async def get(self, key: str | bytes, *, consistency: str | None = None) -> bytes | None:
        call = _core.key_call("GET", key, self._limits, consistency=consistency)
        try:
            return (await self._call(call)).body
        except NotFoundError:
            return None

    async def get_entry(
        self, key: str | bytes, *, consistency: str | None = None
    ) -> _core.Entry | None:
        call = _core.key_call("GET", key, self._limits, consistency=consistency)
        try:
            return _core.entry(await self._call(call))
        except NotFoundError:
            return None

    async def put(
        self,
        key: str | bytes,
        value: bytes | str,
        *,
        consistency: str | None = None,
        ttl: int | None = None,
        expires_ms: int | None = None,
    ) -> bytes | None:
        call = _core.key_call(
            "PUT",
            key,
            self._limits,
            value=value,
            consistency=consistency,
            ttl=ttl,
            expires_ms=expires_ms,
        )
        return _core.previous_or_none(await self._call(call))

    async def delete(self, key: str | bytes, *, consistency: str | None = None) -> bytes | None:
        call = _core.key_call("DELETE", key, self._limits, consistency=consistency)
        try:
            return _core.previous_or_none(await self._call(call))
        except NotFoundError:
            return None

    async def keys(
        self, prefix: str | None = None, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        _core.check_limit(limit)
        out: list[str] = []
        async for key in self.iter_keys(prefix, start_after):
            if limit is not None and len(out) >= limit:
                break
            out.append(key)
        return out

    async def iter_keys(
        self,
        prefix: str | None = None,
        start_after: str | None = None,
        page_size: int = 1000,
        *,
        deleted: bool = False,
    ) -> AsyncIterator[str]:
        cursor = start_after
        while True:
            resp = await self._call(
                Call("GET", _core.keys_path(prefix, cursor, page_size, deleted))
            )
            page, cursor = _core.keys_page(resp, cursor)
            for key in page:
                yield key
            if cursor is None:
                return

    def batch(self, *, atomic: bool = False, consistency: str | None = None) -> AsyncBatch:
        return AsyncBatch(self, atomic, consistency)

    async def put_many(
        self, items: Mapping[str, bytes | str], *, ttl: int | None = None
    ) -> list[dict[str, Any]]:
        return await self._batch(_core.put_ops(items, ttl), False, None)

    async def delete_many(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        return await self._batch(_core.delete_ops(keys), False, None)

    async def _batch(
        self, ops: Sequence[_core.BatchOp], atomic: bool, consistency: str | None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for chunk, call in _core.batch_calls(ops, self._limits, atomic, consistency):
            try:
                out += _core.batch_results(await self._call(call))
            except errors.ResponseError as exc:
                smaller = _core.legacy_calls(exc, chunk, atomic, self._limits, consistency)
                if smaller is None:
                    raise
                for _, again in smaller:  # a node of an earlier version: 1,000 ops a call
                    out += _core.batch_results(await self._call(again))
        return out

    # -- cluster -------------------------------------------------------------

    async def ring(self, refresh: bool = True) -> Ring:
        router = await self._ready()
        ring = router.ring
        if refresh or ring is None:
            ring = await self._drive(_core.load_ring(router, self._token))
        assert ring is not None
        return ring

    async def status(self, url: str | None = None) -> dict[str, Any]:
        router = await self._ready()
        resp = await self._call(Call("GET", "/v1/status"), url or router.seeds[0])
        return _core.status_doc(resp)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> AsyncClient:
        await self._ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncBatch(_core.BatchOps):
    """Collects puts and deletes; `await execute()` (or leaving `async with`) sends them."""

    def __init__(self, client: AsyncClient, atomic: bool, consistency: str | None) -> None:
        super().__init__(atomic, consistency)
        self._client = client

    async def execute(self) -> list[dict[str, Any]]:
        self.results = await self._client._batch(self.ops, self.atomic, self.consistency)
        return self.results

    async def __aenter__(self) -> AsyncBatch:
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None and self.ops and self.results is None:
            await self.execute()
