"""`Client`: the blocking shell around the sans-I/O core.

Sends over a small keep-alive pool of sockets per node (`_syncpool`, HTTP/1.1
by the sans-I/O `_h11`), safe to share between threads; sleeps with
`time.sleep`. All decisions are in `_core`; the set-up it shares with
`AsyncClient` is `_base.ClientBase`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

from ringkv import _core
from ringkv._base import ClientBase
from ringkv._core import Call, Response, Router, Send
from ringkv._syncpool import Pool
from ringkv.errors import NotFoundError, ResponseError, TransportError
from ringkv.ring import Ring

__all__ = ["Batch", "Client"]


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TransportError(f"cannot resolve {host}: {exc}") from exc
    return sorted({str(info[4][0]) for info in infos})


class Client(ClientBase):
    """A blocking ringkv client that sends each key straight to one of its owners.

    `target` is a URL (`http://kv.default.svc.cluster.local:8080`), a list of
    seed URLs, or `ringkv://<headless service>:8080` (every address of it).
    `direct=False` sends every request to those URLs only, never to the
    members' own URLs: for a cluster reached through a forwarded port
    (`kubectl ringkv connect`) or a load balancer.
    """

    _router: Router
    _pool: Pool

    def _start(self) -> None:
        self._router = Router(_core.expand_seeds(self._target, _resolve), direct=self._direct)
        self._pool = Pool(self._pool_size, self._timeout)

    # -- plumbing ------------------------------------------------------------

    def _drive(self, gen: Generator[_core.Action, Any, Any]) -> Any:
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
                    value = self._pool.send(action.request)
                except TransportError as exc:
                    error = exc
            else:
                time.sleep(action.seconds)

    def _call(self, call: Call, base_url: str | None = None) -> Response:
        resp: Response = self._drive(self._steps(call, self._router, base_url))
        return resp

    # -- keys ----------------------------------------------------------------

    def get(self, key: str | bytes, *, consistency: str | None = None) -> bytes | None:
        """The value, or None when the key is absent, deleted or expired."""
        call = _core.key_call("GET", key, self._limits, consistency=consistency)
        try:
            return self._call(call).body
        except NotFoundError:
            return None

    def get_entry(self, key: str | bytes, *, consistency: str | None = None) -> _core.Entry | None:
        """`get` with the version and the absolute expiry (unix ms, None: never)."""
        call = _core.key_call("GET", key, self._limits, consistency=consistency)
        try:
            return _core.entry(self._call(call))
        except NotFoundError:
            return None

    def put(
        self,
        key: str | bytes,
        value: bytes | str,
        *,
        consistency: str | None = None,
        ttl: int | None = None,
        expires_ms: int | None = None,
    ) -> bytes | None:
        """Store `value`; return the previous value, or None if there was none.

        `ttl` (seconds from now) or `expires_ms` (absolute, unix ms) expire it."""
        call = _core.key_call(
            "PUT",
            key,
            self._limits,
            value=value,
            consistency=consistency,
            ttl=ttl,
            expires_ms=expires_ms,
        )
        return _core.previous_or_none(self._call(call))

    def delete(self, key: str | bytes, *, consistency: str | None = None) -> bytes | None:
        """Delete `key`; return the value it had, or None if it had none."""
        call = _core.key_call("DELETE", key, self._limits, consistency=consistency)
        try:
            return _core.previous_or_none(self._call(call))
        except NotFoundError:
            return None

    def keys(
        self, prefix: str | None = None, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Sorted keys (all of them, or the first `limit`) after `start_after`."""
        _core.check_limit(limit)
        out: list[str] = []
        for key in self.iter_keys(prefix, start_after):
            if limit is not None and len(out) >= limit:
                break
            out.append(key)
        return out

    def iter_keys(
        self,
        prefix: str | None = None,
        start_after: str | None = None,
        page_size: int = 1000,
        *,
        deleted: bool = False,
    ) -> Iterator[str]:
        """Every key in order, fetched a page at a time; with `deleted`, instead
        the keys deleted (tombstones the cluster still keeps) or expired."""
        cursor = start_after
        while True:
            resp = self._call(Call("GET", _core.keys_path(prefix, cursor, page_size, deleted)))
            page, cursor = _core.keys_page(resp, cursor)
            yield from page
            if cursor is None:
                return

    def batch(self, *, atomic: bool = False, consistency: str | None = None) -> Batch:
        return Batch(self, atomic, consistency)

    def put_many(
        self, items: Mapping[str, bytes | str], *, ttl: int | None = None
    ) -> list[dict[str, Any]]:
        return self._batch(_core.put_ops(items, ttl), atomic=False, consistency=None)

    def delete_many(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        return self._batch(_core.delete_ops(keys), False, None)

    def _batch(
        self, ops: Sequence[_core.BatchOp], atomic: bool, consistency: str | None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for chunk, call in _core.batch_calls(ops, self._limits, atomic, consistency):
            try:
                out += _core.batch_results(self._call(call))
            except ResponseError as exc:
                smaller = _core.legacy_calls(exc, chunk, atomic, self._limits, consistency)
                if smaller is None:
                    raise
                for _, again in smaller:  # a node of an earlier version: 1,000 ops a call
                    out += _core.batch_results(self._call(again))
        return out

    # -- cluster -------------------------------------------------------------

    @property
    def seeds(self) -> list[str]:
        """The seed URLs (`ringkv://` names resolved to every address)."""
        return list(self._router.seeds)

    def ring(self, refresh: bool = True) -> Ring:
        ring = self._router.ring
        if refresh or ring is None:
            ring = self._drive(_core.load_ring(self._router, self._token))
        assert ring is not None
        return ring

    def status(self, url: str | None = None) -> dict[str, Any]:
        """/v1/status of one node (the first seed unless `url` is given)."""
        resp = self._call(Call("GET", "/v1/status"), url or self._router.seeds[0])
        return _core.status_doc(resp)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Batch(_core.BatchOps):
    """Collects puts and deletes; `execute()` (or leaving the `with`) sends them."""

    def __init__(self, client: Client, atomic: bool, consistency: str | None) -> None:
        super().__init__(atomic, consistency)
        self._client = client

    def execute(self) -> list[dict[str, Any]]:
        self.results = self._client._batch(self.ops, self.atomic, self.consistency)
        return self.results

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None and self.ops and self.results is None:
            self.execute()
