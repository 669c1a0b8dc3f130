"""Driving a rebalance over HTTP: the I/O shell around `ringkv.rebalance`.

`Rebalancer` asks every node of the old and new ring for its state, runs the
step `next_step` chooses, and repeats until the new ring is committed
everywhere. It keeps no state of its own: killed and re-run, it continues
from what the nodes report. The operator and `ringkv local add-node` /
`remove-node` use it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from ringkv._core import Request, decode
from ringkv._syncpool import Pool
from ringkv.errors import ResponseError, TransportError
from ringkv.rebalance import (
    ImpossibleChangeError,
    NodeView,
    Step,
    UnchangedError,
    next_step,
    participants,
    plan,
    refusal,
    target_from_views,
)
from ringkv.ring import Member, Ring

__all__ = ["ImpossibleChangeError", "Rebalancer", "UnchangedError"]


class Rebalancer:
    """Drives a membership change over the nodes' admin API, keeping no state.

    `views` reads every node of the old and new ring, `ringkv.rebalance.next_step`
    decides the step (join, stream, commit, or wait) and `act` carries it
    out; `run` repeats that to the end, `change` plans the new ring first and
    `resume` finishes one left half done. Killed at any point and run again,
    it resumes from what the nodes report.
    """

    def __init__(self, token: str, *, timeout: float = 10.0) -> None:
        self._token = token
        self._pool = Pool(8, timeout)

    def _call(self, method: str, url: str, doc: Any = None) -> Any:
        body = None if doc is None else json.dumps(doc).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        return json.loads(decode(self._pool.send(Request(method, url, body, headers))).body)

    def ring(self, url: str) -> Ring:
        return Ring.from_dict(self._call("GET", f"{url}/v1/ring"))

    def status(self, url: str) -> dict[str, Any]:
        """One node's `GET /v1/status`."""
        return dict(self._call("GET", f"{url}/v1/status"))

    def progress(self, url: str) -> dict[str, Any]:
        """One node's `GET /admin/v1/rebalance`."""
        return dict(self._call("GET", f"{url}/admin/v1/rebalance"))

    def views(self, urls: dict[str, str]) -> tuple[dict[str, NodeView], dict[str, Any]]:
        views: dict[str, NodeView] = {}
        docs: dict[str, Any] = {}
        for node, url in urls.items():
            try:
                docs[node] = self._call("GET", f"{url}/admin/v1/rebalance")
                views[node] = NodeView.from_progress(node, docs[node])
            except (TransportError, ResponseError):
                views[node] = NodeView(node, False)
        return views, docs

    def run(
        self,
        old: Ring,
        target: Ring,
        *,
        timeout_s: float = 600.0,
        on_progress: Callable[[Step, dict[str, Any]], None] | None = None,
    ) -> None:
        """Move the cluster from `old` to `target` (epoch old + 1); return when committed."""
        if target.epoch != old.epoch + 1:
            raise ValueError(f"target epoch must be {old.epoch + 1}")
        urls = {m: _url(old, target, m) for m in participants(old, target)}
        deadline = time.monotonic() + timeout_s
        while True:
            views, docs = self.views(urls)
            step = next_step(target, views)
            if on_progress is not None:
                on_progress(step, docs)
            if step.action == "done":
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"rebalance to epoch {target.epoch} not done: {step.reason}")
            self.act(step, target, urls)
            time.sleep(0.2)

    def act(self, step: Step, target: Ring, urls: Mapping[str, str]) -> list[str]:
        """Ask `step.nodes` to do `step.action` towards `target`; return the errors.

        A node that fails is seen again in the next round of views, so errors
        are reported, not raised. `urls` maps node ids to where to reach them.
        """
        errors = []
        for node in step.nodes if step.action in ("join", "stream", "commit") else ():
            url = urls[node]
            try:
                if step.action == "join":
                    self._call("POST", f"{url}/admin/v1/ring/join", target.to_dict())
                else:
                    self._call(
                        "POST", f"{url}/admin/v1/ring/{step.action}", {"epoch": target.epoch}
                    )
            except (TransportError, ResponseError) as exc:
                errors.append(f"{node}: {exc}")
        return errors

    def abort(self, url: str, epoch: int) -> None:
        """Drop a joining ring on one node (a no-op when it holds no such ring)."""
        self._call("POST", f"{url}/admin/v1/ring/abort", {"epoch": epoch})

    def resume(self, seed_url: str, **kwargs: Any) -> Ring | None:
        """Finish a rebalance some earlier driver left half done; return its ring."""
        current = self.ring(seed_url)
        rings = {current.epoch: current}
        for member in current.members:
            try:
                ring = self.ring(member.url)
            except (TransportError, ResponseError):
                continue
            rings.setdefault(ring.epoch, ring)
        urls = {m.id: m.url for r in rings.values() for m in r.members}
        _, docs = self.views(urls)
        pending = target_from_views(docs)
        if pending is None:
            return None
        old = rings.get(pending.epoch - 1)
        if old is None:
            raise ValueError(f"joining ring epoch {pending.epoch} follows no ring seen here")
        self.run(old, pending, **kwargs)
        return pending

    def change(self, seed_url: str, members: list[Member], **kwargs: Any) -> Ring:
        """Move the cluster to `members` (resuming first whatever was in progress).

        Raises `ImpossibleChangeError` before any node is asked to do anything
        when the ring cannot have these members (fewer than its replication
        factor); returns the current ring when it already has them.
        """
        reason = refusal(self.ring(seed_url), members)
        if reason is not None:
            raise ImpossibleChangeError(reason)
        self.resume(seed_url, **kwargs)
        current = self.ring(seed_url)
        try:
            target = plan(current, members)
        except UnchangedError:  # already there (a resumed run did this very change)
            return current
        self.run(current, target, **kwargs)
        return target

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Rebalancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _url(old: Ring, target: Ring, member: str) -> str:
    return (target if member in target.member_ids else old).member(member).url
