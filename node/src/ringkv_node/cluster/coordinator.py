"""The coordinator: any node serves any key by asking that key's owners.

Write: stamp once, send to all N owners in parallel, answer after W acks;
an owner that fails gets a durable hint (hinted handoff). Read: ask R owners
(itself first when it owns the key), the newest version wins, and stale
owners are repaired in the background (read repair). Everything remote goes
through `Transport`, so the same code runs over HTTP or a fake network.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from ringkv_node.cluster.peer import PeerError, Transport
from ringkv_node.cluster.ringstate import RingState
from ringkv_node.model.quorum import newest, required_acks, stale
from ringkv_node.model.records import Record
from ringkv_node.replica import KV, Hints

__all__ = ["Coordinator", "NotEnoughReplicasError"]

log = logging.getLogger("ringkv.coordinator")


class NotEnoughReplicasError(Exception):
    """Fewer owners answered than the consistency level needs."""

    def __init__(self, needed: int, answered: int, owners: int, op: str) -> None:
        super().__init__(
            f"{op} needs {needed} of {owners} replicas; only {answered} answered"
            + ("; the write may still be applied by hinted handoff" if op == "write" else "")
        )
        self.needed = needed
        self.answered = answered


class Coordinator:
    """Serves any key's reads and writes from this node by asking the key's owners.

    Writes go to every owner (old and new ones while a ring joins) and are
    answered after the level's acknowledgements; owners that fail get hints.
    Reads ask just enough owners, newest version wins, stale owners are
    repaired in the background. Hot paths are settled by future callbacks
    (`_WriteQuorum`, `_ReadQuorum`), with no task per request.
    """

    def __init__(
        self,
        node_id: str,
        kv: KV,
        transport: Transport,
        hints: Hints,
        rings: RingState,
    ) -> None:
        self.node_id = node_id
        self.rings = rings
        self.kv = kv
        self.transport = transport
        self.hints = hints
        self._background: set[asyncio.Future[Any]] = set()
        self.forwarded = 0  # requests for keys this node does not own
        self.coordinated = 0

    def owners(self, key: bytes) -> tuple[str, ...]:
        owners = self.rings.ring.owners_of_key(key)
        self.coordinated += 1
        if self.node_id not in owners:
            self.forwarded += 1
        return owners

    # -- writes --------------------------------------------------------------

    def _start_write(self, owner: str, key: bytes, rec: Record) -> asyncio.Future[Any]:
        if owner == self.node_id:
            return self.kv.enqueue_apply(key, rec)
        fut = asyncio.ensure_future(self.transport.replicate(owner, key, rec))
        fut.add_done_callback(lambda f: self._hint_if_failed(f, owner, [(key, rec)]))
        return fut

    def _hint_if_failed(
        self, fut: asyncio.Future[Any], owner: str, items: list[tuple[bytes, Record]]
    ) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._track(asyncio.ensure_future(self.hints.add(owner, items)))

    def write_plan(
        self, owners: tuple[str, ...], key: bytes, level: str
    ) -> tuple[tuple[str, ...], list[Group]]:
        """Owners to write to (or read from), and the answers each owner set must give.

        While a new ring is joining, writes go to the old and the new owners and
        need a quorum of each: reads switch to the new owners at commit, and
        must find every acknowledged write there. Reads while joining use the
        same plan (`_read_joining`).
        """
        groups = [(frozenset(owners), required_acks(level, len(owners)))]
        pending = self.rings.pending
        if pending is None:
            return owners, groups
        new = pending.owners_of_key(key)
        groups.append((frozenset(new), required_acks(level, len(new))))
        return owners + tuple(o for o in new if o not in owners), groups

    async def write(self, key: bytes, rec: Record, level: str) -> Record | None:
        """Write `rec`, stamped by this node's clock (`KV.stamp`), to the key's owners.

        Returns the newest previous record among the owners that acknowledged.
        """
        return await self.write_now(key, rec, level)

    def write_now(self, key: bytes, rec: Record, level: str) -> asyncio.Future[Record | None]:
        """`write` as a future: the local write's own when this node is the key's
        only owner; otherwise one resolved by callbacks as acknowledgements come
        (no task per write)."""
        owners = self.owners(key)
        if owners == (self.node_id,) and self.rings.pending is None:
            return self.kv.enqueue_apply(key, rec)
        targets, groups = self.write_plan(owners, key, level)
        futs = {o: self._start_write(o, key, rec) for o in targets}
        # Backpressure: a quorum of remote replicas could otherwise answer
        # clients while this node's own copy falls ever further behind (the
        # coordinating event loop and the writer thread share one GIL).
        local = futs.get(self.node_id) if self.kv.storage.backlogged() else None
        return _WriteQuorum(self, futs, groups, local).result

    async def write_atomic(
        self, items: list[tuple[bytes, Record]], level: str
    ) -> list[Record | None]:
        """Write records of one partition as one transaction on every owner.

        Returns, per item, the newest previous record among acknowledging owners.
        """
        targets, groups = self.write_plan(self.owners(items[0][0]), items[0][0], level)

        async def one(owner: str) -> list[Record | None]:
            if owner == self.node_id:
                return [a.previous for a in await self.kv.apply_many(items)]
            try:
                return await self.transport.replicate_many(owner, items)
            except PeerError:
                await self.hints.add(owner, items)
                raise

        results = await asyncio.gather(*(one(o) for o in targets), return_exceptions=True)
        acked: dict[str, list[Record | None]] = {}
        for owner, r in zip(targets, results, strict=True):
            if isinstance(r, PeerError):
                continue
            if isinstance(r, BaseException):
                raise r
            acked[owner] = r
        short = unmet(acked, groups)
        if short is not None:
            group, needed = short
            raise NotEnoughReplicasError(needed, len(acked.keys() & group), len(group), "write")
        return [newest(column) for column in zip(*acked.values(), strict=True)]

    # -- reads ---------------------------------------------------------------

    def _start_read(self, owner: str, key: bytes) -> asyncio.Future[Any]:
        if owner == self.node_id:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.set_result(self.kv.storage.get(key))
            return fut
        return asyncio.ensure_future(self.transport.read(owner, key))

    async def read(self, key: bytes, level: str) -> Record | None:
        """The newest record among R owners (tombstones and expired included)."""
        now = self.read_now(key, level)
        return await now if isinstance(now, asyncio.Future) else now

    def read_now(self, key: bytes, level: str) -> Record | asyncio.Future[Record | None] | None:
        """`read`, answered at once when this node's own copy is enough.

        Otherwise a future, resolved by callbacks as owners answer: the fast
        lane serves reads without a task per request.
        """
        owners = self.owners(key)
        if self.rings.pending is not None:
            return asyncio.ensure_future(
                self._read_joining(key, *self.write_plan(owners, key, level))
            )
        needed = required_acks(level, len(owners))
        if needed == 1 and self.node_id in owners:
            return self.kv.storage.get(key)
        order = sorted(owners, key=lambda o: (o != self.node_id, self.transport.is_down(o)))
        return _ReadQuorum(self, key, order, needed).result

    async def _read_joining(
        self, key: bytes, targets: tuple[str, ...], groups: list[Group]
    ) -> Record | None:
        """A read while a ring is joining: a quorum of the old owners and of the new.

        Nodes commit a new ring one after another; one that has committed
        writes to the new owners only, so a node still on the old ring must
        read the new owners too, or it could miss that write.
        """
        futs = {o: self._start_read(o, key) for o in targets}
        answers = await gather_groups(futs, groups)
        short = unmet(answers, groups)
        if short is not None:
            group, needed = short
            raise NotEnoughReplicasError(needed, len(answers.keys() & group), len(group), "read")
        return self._newest_repaired(key, answers)

    def _newest_repaired(self, key: bytes, answers: dict[str, Record | None]) -> Record | None:
        """The newest answer; owners that gave an older one are repaired in the background."""
        winner = newest(answers.values())
        for owner in stale(answers, winner):
            assert winner is not None
            self._track(asyncio.ensure_future(self._repair(owner, key, winner)))
        return winner

    async def _repair(self, owner: str, key: bytes, rec: Record) -> None:
        if owner == self.node_id:
            await self.kv.apply(key, rec)
        else:
            await self.transport.replicate(owner, key, rec)

    def _track(self, fut: asyncio.Future[Any]) -> None:
        """Keep `fut` until it settles, and log how it failed (a callback, not a
        task: the slowest replica of nearly every write ends here)."""
        self._background.add(fut)
        fut.add_done_callback(self._settled)

    def _settled(self, fut: asyncio.Future[Any]) -> None:
        self._background.discard(fut)
        error = None if fut.cancelled() else fut.exception()
        if isinstance(error, PeerError):
            log.debug("background replica call failed: %s", error)
        elif error is not None:
            log.error("background replica call failed", exc_info=error)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Let background repairs and slow replica writes finish (on shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # finishing work can start more (a failed replica write adds a hint)
        while self._background and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._background), timeout=remaining)


Group = tuple[frozenset[str], int]  # owners, acknowledgements they must give


class _ReadQuorum:
    """A read of `needed` owners, asked in `order`, gathered by callbacks.

    Asks just enough owners; each one that fails is replaced by the next in
    `order`. `result` resolves with the newest answer (stale owners are
    repaired in the background), or fails with NotEnoughReplicasError when
    the owners run out.
    """

    __slots__ = (
        "answers",
        "asked",
        "coordinator",
        "key",
        "needed",
        "order",
        "outstanding",
        "result",
    )

    def __init__(self, coordinator: Coordinator, key: bytes, order: list[str], needed: int) -> None:
        self.coordinator = coordinator
        self.key = key
        self.order = order
        self.needed = needed
        self.answers: dict[str, Record | None] = {}
        self.asked = 0
        self.outstanding = 0
        self.result: asyncio.Future[Record | None] = asyncio.get_running_loop().create_future()
        self._ask()

    def _ask(self) -> None:
        coordinator, answers, result = self.coordinator, self.answers, self.result
        while len(answers) + self.outstanding < self.needed:
            if self.asked == len(self.order):
                if self.outstanding == 0:
                    error = NotEnoughReplicasError(
                        self.needed, len(answers), len(self.order), "read"
                    )
                    result.set_exception(error)
                return
            owner = self.order[self.asked]
            self.asked += 1
            if owner == coordinator.node_id:
                try:
                    answers[owner] = coordinator.kv.storage.get(self.key)
                except Exception as exc:
                    result.set_exception(exc)
                    return
            else:
                self.outstanding += 1
                fut = coordinator._start_read(owner, self.key)
                fut.add_done_callback(functools.partial(self._answered, owner))
        if len(answers) >= self.needed:
            try:
                result.set_result(coordinator._newest_repaired(self.key, answers))
            except Exception as exc:
                result.set_exception(exc)

    def _answered(self, owner: str, fut: asyncio.Future[Any]) -> None:
        self.outstanding -= 1
        error = None if fut.cancelled() else fut.exception()  # always retrieve it
        if self.result.done():
            return
        if not fut.cancelled() and error is None:
            self.answers[owner] = fut.result()
        self._ask()


class _WriteQuorum:
    """A write's acknowledgements, gathered by callbacks into one future.

    `result` resolves with the newest previous record among the owners that
    acknowledged, once every owner group has its acks and `wait` (the local
    write, when this node's writer is backlogged) has settled; or fails with
    NotEnoughReplicasError as soon as one group never can (after the local
    write settles, so the error says truthfully how many have it). Owners
    still writing then finish, or get hinted, in the background.
    """

    __slots__ = (
        "acked",
        "coordinator",
        "deciding",
        "failed",
        "futs",
        "groups",
        "result",
        "wait",
    )

    def __init__(
        self,
        coordinator: Coordinator,
        futs: dict[str, asyncio.Future[Any]],
        groups: list[Group],
        wait: asyncio.Future[Any] | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.futs = futs
        self.groups = groups
        self.wait = wait  # settles before success is answered (backpressure)
        self.acked: dict[str, Any] = {}
        self.failed: set[str] = set()
        self.deciding = False
        self.result: asyncio.Future[Record | None] = asyncio.get_running_loop().create_future()
        for owner, fut in futs.items():
            fut.add_done_callback(functools.partial(self._on_done, owner))

    def _on_done(self, owner: str, fut: asyncio.Future[Any]) -> None:
        error = None if fut.cancelled() else fut.exception()  # always retrieve it
        if self.deciding:
            return
        if fut.cancelled() or error is not None:
            self.failed.add(owner)
        else:
            self.acked[owner] = fut.result()
        if unmet(self.acked, self.groups) is None:
            if self.wait is not None and not self.wait.done():
                return  # decided when it settles: it is one of `futs`
            self.deciding = True
            self._background()
            if not self.result.done():
                self.result.set_result(newest(self.acked.values()))
        elif hopeless(self.failed, self.groups):
            self.deciding = True
            local = self.futs.get(self.coordinator.node_id)
            if local is None or local.done():
                self._short()
            else:
                local.add_done_callback(self._short)

    def _short(self, _: object = None) -> None:
        self._background()
        if self.result.done():
            return
        futs, groups = self.futs, self.groups
        acked = {o: f.result() for o, f in futs.items() if _succeeded(f)}
        short = unmet(acked, groups) or unmet(self.acked, groups)
        assert short is not None
        group, needed = short
        answered = len(acked.keys() & group)
        self.result.set_exception(NotEnoughReplicasError(needed, answered, len(group), "write"))

    def _background(self) -> None:
        for fut in self.futs.values():
            if not fut.done():
                self.coordinator._track(fut)


def unmet(acked: dict[str, Any], groups: list[Group]) -> Group | None:
    """The first owner group short of its acknowledgements, or None."""
    for group in groups:
        if len(acked.keys() & group[0]) < group[1]:
            return group
    return None


def hopeless(failed: set[str], groups: list[Group]) -> bool:
    """True when some owner group can no longer give its acknowledgements."""
    return any(len(group - failed) < needed for group, needed in groups)


def _succeeded(fut: asyncio.Future[Any]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None


async def gather_groups(
    futs: dict[str, asyncio.Future[Any]], groups: list[Group]
) -> dict[str, Any]:
    """Results by owner, as soon as every group has its acks or one never can."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    acked: dict[str, Any] = {}
    failed: set[str] = set()

    def on_done(owner: str, fut: asyncio.Future[Any]) -> None:
        error = None if fut.cancelled() else fut.exception()  # always retrieve it
        if done.done():
            return
        if fut.cancelled() or error is not None:
            failed.add(owner)
        else:
            acked[owner] = fut.result()
        if unmet(acked, groups) is None or hopeless(failed, groups):
            done.set_result(None)

    for owner, fut in futs.items():
        fut.add_done_callback(lambda f, o=owner: on_done(o, f))  # type: ignore[misc]
    await done
    return dict(acked)
