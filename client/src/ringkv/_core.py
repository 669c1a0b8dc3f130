"""The sans-I/O core shared by `Client` and `AsyncClient` (STYLE §4).

Everything a client decides lives here, with no sockets: how a call becomes
a request, which owners of a key to try and in what order, how an answer
becomes a value or an exception, when to retry and how long to wait, and when
the ring is stale. The two shells only send requests and sleep.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import msgpack

from ringkv.digits import is_digits
from ringkv.errors import (
    InvalidArgumentError,
    NoRingError,
    NotEnoughReplicasError,
    ResponseError,
    TransportError,
    UnavailableError,
    ValueTypeError,
    error_for,
)
from ringkv.keys import Limits, encode_key
from ringkv.ring import Ring

__all__ = [
    "Call",
    "Entry",
    "Request",
    "Response",
    "RetryPolicy",
    "Router",
    "batch_call",
    "decode",
    "key_call",
]

EPOCH_HEADER = "x-ringkv-epoch"
VERSION_HEADER = "x-ringkv-version"
EXPIRES_HEADER = "x-ringkv-expires"  # absolute expiry, unix ms (keys with a TTL only)
CONSISTENCY_LEVELS = ("one", "quorum", "all")
MSGPACK = "application/msgpack"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True, slots=True)
class Call:
    """What the user asked for, before a node is chosen."""

    method: str
    path: str  # with query
    key: bytes | None = None  # routes the call to the key's owners
    body: bytes | None = None
    content_type: str | None = None
    idempotent: bool = True

    def request(self, base_url: str, token: str | None) -> Request:
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.content_type:
            headers["Content-Type"] = self.content_type
        return Request(self.method, base_url + self.path, self.body, headers)


def check_token(token: object) -> str | None:
    """`token` (None: none) if it can go in an `Authorization` header: visible
    ASCII, no space, no line break (one that has them would let it carry
    other headers), else InvalidArgumentError."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise InvalidArgumentError(f"the token must be a string, not {type(token).__name__}")
    if not token or not (token.isascii() and token.isprintable()) or " " in token:
        raise InvalidArgumentError(
            "the token must be visible ASCII characters (no spaces, tabs or line breaks)"
        )
    return token


MAX_TIMEOUT_S = 86_400.0


def check_timeout(timeout: object) -> float:
    """`timeout` in seconds if it is a number above 0 and at most a day (socket
    timeouts overflow past about 1e9), else InvalidArgumentError."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArgumentError(f"timeout must be a number of seconds, not {timeout!r}")
    if not 0 < timeout <= MAX_TIMEOUT_S:  # also NaN
        raise InvalidArgumentError(
            f"timeout must be above 0 and at most {MAX_TIMEOUT_S:.0f} seconds, not {timeout!r}"
        )
    return float(timeout)


def _query(**params: object) -> str:
    clean = {k: str(v) for k, v in params.items() if v is not None}
    return ("?" + urlencode(clean)) if clean else ""


def _check_level(consistency: str | None) -> None:
    if consistency is not None and consistency not in CONSISTENCY_LEVELS:
        raise InvalidArgumentError(
            f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}; got {consistency!r}"
        )


def to_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ValueTypeError(f"values are bytes or str, not {type(value).__name__}")


def _check_expiry(ttl: int | None, expires_ms: int | None) -> None:
    for name, what, number in (("ttl", "seconds", ttl), ("expires_ms", "unix ms", expires_ms)):
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int) or number < 1
        ):
            raise InvalidArgumentError(f"{name} must be a whole number of {what} >= 1")
    if ttl is not None and expires_ms is not None:
        raise InvalidArgumentError("give ttl or expires_ms, not both")


def key_call(
    method: str,
    key: str | bytes,
    limits: Limits,
    *,
    value: bytes | str | None = None,
    consistency: str | None = None,
    ttl: int | None = None,
    expires_ms: int | None = None,
) -> Call:
    raw = encode_key(key, limits)
    _check_level(consistency)
    _check_expiry(ttl, expires_ms)
    body = None if value is None else to_bytes(value)
    if body is not None and len(body) > limits.max_value_bytes:
        raise InvalidArgumentError(
            f"value is {len(body)} bytes; the limit is {limits.max_value_bytes}",
            status=413,
            code="too_large",
        )
    query = _query(consistency=consistency, ttl=ttl, expires=expires_ms)
    return Call(method, "/v1/kv/" + quote(raw, safe="") + query, raw, body)


def batch_call(
    ops: Sequence[BatchOp],
    limits: Limits,
    *,
    atomic: bool = False,
    consistency: str | None = None,
) -> Call:
    """A /v1/batch call; ops are (op, key, value, ttl, expires_ms), op "put" or "delete"."""
    _check_level(consistency)
    if not ops:
        raise InvalidArgumentError("a batch needs at least one op")
    if len(ops) > limits.max_batch_ops:
        raise InvalidArgumentError(
            f"{len(ops)} ops; a batch holds at most {limits.max_batch_ops}",
            status=413,
            code="too_large",
        )
    doc_ops: list[dict[str, Any]] = []
    add = doc_ops.append
    first_key = None
    max_key = limits.max_key_bytes
    for op, key, value, ttl, expires_ms in ops:
        if (
            op == "put"
            and ttl is None
            and expires_ms is None
            and type(value) is bytes
            and type(key) is str
            and key.isprintable()  # no control character, and no lone surrogate (Cs)
            and 0 < len(key.encode("utf-8")) <= max_key
        ):  # what put_many sends, checked as `encode_key` would, in fewer steps
            add({"op": "put", "key": key, "value": value})
            first_key = first_key or key.encode("utf-8")
            continue
        raw = encode_key(key, limits)
        first_key = first_key or raw
        item: dict[str, Any] = {"op": op, "key": raw.decode()}
        if op == "put":
            item["value"] = to_bytes(value)  # None is refused, not stored as b"" (as `put`)
            _check_expiry(ttl, expires_ms)
            if ttl is not None:
                item["ttl"] = ttl
            if expires_ms is not None:
                item["expires"] = expires_ms
        elif op != "delete":
            raise InvalidArgumentError(f"batch op must be put or delete, not {op!r}")
        add(item)
    doc: dict[str, Any] = {"ops": doc_ops, "atomic": atomic}
    if consistency:
        doc["consistency"] = consistency
    # msgpack: raw values, no base64 to encode here or decode on the node
    body = msgpack.packb(doc, use_bin_type=True)
    # an atomic batch lives in one partition: send it to that partition's owners
    return Call("POST", "/v1/batch", first_key if atomic else None, body, MSGPACK)


BatchOp = tuple[str, "str | bytes", "bytes | str | None", "int | None", "int | None"]


class BatchOps:
    """Puts and deletes collected for one or more /v1/batch calls (both shells)."""

    def __init__(self, atomic: bool, consistency: str | None) -> None:
        self.atomic = atomic
        self.consistency = consistency
        self.ops: list[BatchOp] = []
        self.results: list[dict[str, Any]] | None = None

    def put(
        self,
        key: str | bytes,
        value: bytes | str,
        *,
        ttl: int | None = None,
        expires_ms: int | None = None,
    ) -> Any:
        """Queue a put; `ttl` (seconds) or `expires_ms` (absolute, unix ms) expire it."""
        self.ops.append(("put", key, value, ttl, expires_ms))
        return self

    def delete(self, key: str | bytes) -> Any:
        self.ops.append(("delete", key, None, None, None))
        return self


def put_ops(items: Mapping[str, bytes | str], ttl: int | None) -> list[BatchOp]:
    if not isinstance(items, Mapping):
        raise InvalidArgumentError(
            f"put_many takes a mapping of key to value, not {type(items).__name__}"
        )
    return [("put", k, v, ttl, None) for k, v in items.items()]


def delete_ops(keys: Sequence[str]) -> list[BatchOp]:
    if isinstance(keys, str | bytes):  # would delete each character as a key
        raise InvalidArgumentError(f"delete_many takes a list of keys, not one key ({keys!r})")
    return [("delete", k, None, None, None) for k in keys]


def batch_calls(
    ops: Sequence[BatchOp], limits: Limits, atomic: bool, consistency: str | None
) -> list[tuple[Sequence[BatchOp], Call]]:
    """The /v1/batch calls for `ops`, each with its ops: one if atomic, else
    chunks within both batch limits: `max_batch_ops` ops, and a body of
    `max_batch_bytes` (a chunk whose body is larger is cut in halves until
    each fits; the body is built once in the usual case)."""
    if atomic:
        return [(ops, batch_call(ops, limits, atomic=True, consistency=consistency))]
    step = limits.max_batch_ops
    out: list[tuple[Sequence[BatchOp], Call]] = []
    todo = [ops[i : i + step] for i in range(0, len(ops), step)][::-1]
    while todo:
        chunk = todo.pop()
        call = batch_call(chunk, limits, consistency=consistency)
        if len(call.body or b"") > limits.max_batch_bytes and len(chunk) > 1:
            half = len(chunk) // 2
            todo += [chunk[half:], chunk[:half]]  # the first half next: order kept
            continue
        out.append((chunk, call))
    return out


# A node before 2026-12-04 takes at most this many ops a batch (now 10,000).
LEGACY_BATCH_OPS = 1000


def legacy_calls(
    exc: ResponseError,
    ops: Sequence[BatchOp],
    atomic: bool,
    limits: Limits,
    consistency: str | None,
) -> list[tuple[Sequence[BatchOp], Call]] | None:
    """The calls to send instead of a non-atomic one of `ops` that a node
    refused as too many ops (413 `too_large`, which it says before writing
    any): chunks of `LEGACY_BATCH_OPS`, when the call held more (a node of
    an earlier version); None: not that refusal, or an atomic batch (never
    cut), let it raise."""
    if atomic or exc.status != 413 or exc.code != "too_large" or len(ops) <= LEGACY_BATCH_OPS:
        return None
    if "ops; the limit is" not in exc.message:  # a body too large is cut already
        return None
    smaller = replace(limits, max_batch_ops=LEGACY_BATCH_OPS)
    return batch_calls(ops, smaller, False, consistency)


def decode(resp: Response) -> Response:
    """Raise the fitting `ResponseError` for an error answer; pass others through."""
    if resp.status < 400:
        return resp
    try:
        body = json.loads(resp.body)
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        body = {"error": "http_error", "message": resp.body[:200].decode(errors="replace")}
    raise error_for(resp.status, body)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again, and how long to wait first (full jitter)."""

    attempts: int = 4
    backoff_s: float = 0.05
    max_backoff_s: float = 1.0

    def should_retry(self, call: Call, error: Exception, attempt: int) -> bool:
        if attempt + 1 >= self.attempts:
            return False
        if isinstance(error, TransportError):
            return call.idempotent
        if isinstance(error, NotEnoughReplicasError):
            return call.method == "GET"  # a failed write may still land; never repeat it
        if isinstance(error, UnavailableError):
            return error.code in ("unavailable", "http_error") and call.idempotent
        return False

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        return rand() * min(self.max_backoff_s, self.backoff_s * (1 << attempt))


class Router:
    """Which node to send a call to: the key's owners first, then anyone.

    With `direct=False` every call goes to the seeds only, in order, and no
    ring is loaded for routing: for a cluster reached through one address
    that forwards to some node (`kubectl port-forward`, a load balancer),
    where the members' own URLs (pod DNS names) cannot be reached. Any node
    coordinates any key, so this costs one hop inside the cluster, not
    correctness.
    """

    def __init__(self, seeds: Sequence[str], *, direct: bool = True) -> None:
        if not seeds:
            raise ValueError("give at least one seed URL")
        self.seeds = [s.rstrip("/") for s in seeds]
        self.direct = direct
        self.ring: Ring | None = None

    def install(self, doc: Any) -> Ring:
        ring = Ring.from_dict(doc)
        if self.ring is None or ring.epoch >= self.ring.epoch:
            self.ring = ring
        return self.ring

    def stale(self, resp: Response) -> bool:
        """True when the node knows a newer ring than ours (and we route by it)."""
        epoch = resp.headers.get(EPOCH_HEADER, "")
        return (
            self.direct
            and self.ring is not None
            and is_digits(epoch)
            and int(epoch) > self.ring.epoch
        )

    def candidates(self, call: Call) -> list[str]:
        """Base URLs to try in order: owners of the key, then the other members, then
        seeds; only the seeds when not `direct`."""
        out: list[str] = []
        ring = self.ring
        if ring is not None and self.direct:
            if call.key is not None:
                out += [ring.member(m).url for m in ring.owners_of_key(call.key)]
            members = [m.url for m in ring.members]
            random.shuffle(members)
            out += members
        out += self.seeds
        seen: set[str] = set()
        return [u for u in out if not (u in seen or seen.add(u))]  # type: ignore[func-returns-value]

    def ring_urls(self) -> list[str]:
        """Where to ask for the ring: the members we know, then the seeds (only the
        seeds when not `direct`: the members' URLs may not be reachable)."""
        urls = list(self.seeds)
        if self.ring is not None and self.direct:
            urls = [m.url for m in self.ring.members] + urls
        seen: set[str] = set()
        return [u for u in urls if not (u in seen or seen.add(u))]  # type: ignore[func-returns-value]


def no_ring(errors: Iterable[Exception]) -> NoRingError:
    reasons = "; ".join(str(e) for e in errors) or "no seeds"
    return NoRingError(f"no seed answered with a ring ({reasons})")


def check_limit(limit: object) -> None:
    """`keys(limit=)`: None (all) or a whole number; InvalidArgumentError otherwise."""
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidArgumentError(f"limit must be a whole number from 0, not {limit!r}")


def keys_path(
    prefix: str | None, start_after: str | None, limit: int | None, deleted: bool = False
) -> str:
    """The `/v1/keys` request; InvalidArgumentError for arguments of the wrong type."""
    for name, value in (("prefix", prefix), ("start_after", start_after)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"{name} must be a string, not {type(value).__name__}")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidArgumentError(f"the page size must be a whole number from 1, not {limit!r}")
    return "/v1/keys" + _query(
        prefix=prefix or None, start_after=start_after, limit=limit, deleted=deleted or None
    )


def keys_page(resp: Response, after: str | None = None) -> tuple[list[str], str | None]:
    """A `/v1/keys` page: its keys and the next cursor. ResponseError for an
    answer of another shape, or a cursor that does not move past `after` (the
    page's own cursor): listing on would never end."""
    try:
        doc = json.loads(resp.body)
        keys, nxt = doc["keys"], doc.get("next")
    except (ValueError, KeyError, TypeError):
        keys = nxt = None
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)) or not (
        nxt is None or (isinstance(nxt, str) and (after is None or nxt > after))
    ):
        raise ResponseError(
            resp.status,
            "bad_answer",
            f"a /v1/keys answer that is not a page of keys after {after!r}: {resp.body[:200]!r}",
            {},
        )
    return keys, nxt


class Entry(NamedTuple):
    """A key's value with its version (`ts@member`) and absolute expiry (unix ms)."""

    value: bytes
    version: str | None
    expires_ms: int | None


def entry(resp: Response) -> Entry:
    expires = resp.headers.get(EXPIRES_HEADER, "")
    return Entry(
        resp.body, resp.headers.get(VERSION_HEADER), int(expires) if is_digits(expires) else None
    )


def previous_or_none(resp: Response) -> bytes | None:
    """PUT/DELETE answers: 200 carries the previous value; 201/404 mean none."""
    return resp.body if resp.status == 200 else None


def status_doc(resp: Response) -> dict[str, Any]:
    """A `/v1/status` answer: a JSON object naming its node (`node_id`, a
    string) and whether it is `ready` (a boolean); ResponseError for an
    answer of another shape (a server that is not a ringkv node). Its other
    fields are as the node's version gives them."""
    try:
        doc = json.loads(resp.body)
    except ValueError:
        doc = None
    if not (
        isinstance(doc, dict)
        and isinstance(doc.get("node_id"), str)
        and isinstance(doc.get("ready"), bool)
    ):
        raise ResponseError(
            resp.status,
            "bad_answer",
            f"a /v1/status answer that is not a ringkv node's: {resp.body[:200]!r}",
            {},
        )
    return doc


def batch_results(resp: Response) -> list[dict[str, Any]]:
    """A `/v1/batch` answer's results, one per op; ResponseError for an answer
    of another shape (a node of another version, or not a node)."""
    try:
        doc = msgpack.unpackb(resp.body, raw=False)
        return [
            {"status": it["status"], "version": it["version"], "previous": it.get("previous")}
            for it in doc["results"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.ExtraData):
        raise ResponseError(
            resp.status,
            "bad_answer",
            f"a /v1/batch answer of another shape: {resp.body[:200]!r}",
            {},
        ) from None


# -- the request loop, as a generator the shells drive -------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Shell: send this request; send back a `Response`, or throw `TransportError`."""

    request: Request


@dataclass(frozen=True, slots=True)
class Sleep:
    """Shell: wait this long, then send back None."""

    seconds: float


Action = Send | Sleep


def load_ring(router: Router, token: str | None) -> Generator[Action, Any, Ring]:
    """Fetch /v1/ring from the members we know, then the seeds; install the first."""
    errors: list[Exception] = []
    for url in router.ring_urls():
        try:
            resp = yield Send(Call("GET", "/v1/ring").request(url, token))
            return router.install(json.loads(decode(resp).body))
        except (TransportError, ResponseError, ValueError) as exc:
            if isinstance(exc, ResponseError) and exc.status in (401, 403):
                raise
            errors.append(exc)
    raise no_ring(errors)


def run_call(
    call: Call, router: Router, policy: RetryPolicy, token: str | None, base_url: str | None = None
) -> Generator[Action, Any, Response]:
    """One call with routing, failover, backoff and ring refresh.

    `base_url` pins the call to one node (status of a given node). A router
    that is not `direct` needs no ring: it sends to its seeds.
    """
    if router.ring is None and base_url is None and router.direct:
        yield from load_ring(router, token)
    attempt = 0
    while True:
        urls = [base_url] if base_url else router.candidates(call)
        url = urls[attempt % len(urls)]
        try:
            resp = decode((yield Send(call.request(url, token))))
        except (TransportError, ResponseError) as exc:
            if isinstance(exc, ResponseError) and exc.status == 409 and exc.code == "stale_epoch":
                yield from _refresh(router, token)
            elif not policy.should_retry(call, exc, attempt):
                raise
            else:
                yield Sleep(policy.delay(attempt))
            attempt += 1
            if attempt >= policy.attempts:
                raise
            continue
        if router.stale(resp):
            yield from _refresh(router, token)
        return resp


def _refresh(router: Router, token: str | None) -> Generator[Action, Any, None]:
    # on failure keep the ring we have; the next answer will tell again
    with contextlib.suppress(NoRingError):
        yield from load_ring(router, token)


def service_names(target: str | Sequence[str]) -> list[tuple[str, int]]:
    """The (host, port) of every `ringkv://host:port` in `target`, to resolve."""
    items = [target] if isinstance(target, str) else list(target)
    out = []
    for item in items:
        if item.startswith("ringkv://"):
            hostport = item[len("ringkv://") :].rstrip("/")
            host, _, port_text = hostport.rpartition(":")
            if not host:
                host, port_text = hostport, "8080"
            if not is_digits(port_text):
                raise ValueError(f"{item!r}: port must be a number")
            out.append((host, int(port_text)))
    return out


def check_target(target: object) -> list[str]:
    """A client's `target` as a list of its items: a string, or a non-empty
    list (or other sequence) of strings; InvalidArgumentError otherwise."""
    items = [target] if isinstance(target, str) else target
    if isinstance(items, (bytes, bytearray, dict, set)) or not isinstance(items, Sequence):
        raise InvalidArgumentError(
            f"the target must be a URL or a list of URLs, not {type(target).__name__}"
        )
    if not items or not all(isinstance(item, str) for item in items):
        raise InvalidArgumentError(f"the target must name URLs (strings), not {target!r}")
    return list(items)


def check_settings(direct: object, pool_size: object) -> None:
    """InvalidArgumentError unless `direct` is a bool and `pool_size` is None
    or a whole number from 1."""
    if type(direct) is not bool:
        raise InvalidArgumentError(f"direct must be True or False, not {direct!r}")
    if pool_size is not None and (type(pool_size) is not int or pool_size < 1):
        raise InvalidArgumentError(f"pool_size must be a whole number from 1, not {pool_size!r}")


def expand_seeds(
    target: str | Sequence[str], resolve: Callable[[str, int], list[str]]
) -> list[str]:
    """Seed URLs from a URL, a list of URLs, or `ringkv://host:port` (all its addresses).

    `ringkv://kv-peers.ns.svc.cluster.local:8080` names a headless Service:
    every address it resolves to becomes a seed.
    """
    items = check_target(target)
    names = iter(service_names(target))
    seeds: list[str] = []
    for item in items:
        if item.startswith("ringkv://"):
            host, port = next(names)
            addrs = resolve(host, port)
            if not addrs:
                raise NoRingError(f"{host} resolved to no addresses")
            seeds += [f"http://{a}:{port}" for a in addrs]
        elif item.startswith(("http://", "https://")):
            if "?" in item or "#" in item or not item.split("://", 1)[1].strip("/"):
                raise ValueError(f"{item!r}: a seed URL has a host and no query or fragment")
            seeds.append(item.rstrip("/"))
        else:
            raise ValueError(f"{item!r} is not an http(s):// or ringkv:// URL")
    return seeds
