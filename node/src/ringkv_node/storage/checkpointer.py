"""The checkpointer: when a checkpoint is due, and taking one while writes go on.

`checkpoint` is the file format and the steps that make a snapshot the one
a crash rolls back to; this is the schedule and the threads. Between two
commits the event loop asks `maybe_start`; when `checkpoint_due` says so, it
pins the snapshot just committed (a read transaction: LMDB keeps its pages
as they are) and copies the meta pages; the syncer starts a new log segment
once every record before that snapshot is written and before any after it;
a thread of its own then syncs the file and saves the checkpoint, and only
then lets the previous snapshot go and deletes older segments.

Due about once a second while writes come in (`CHECKPOINT_INTERVAL_S`: it
bounds the replay after a crash and the pages kept from reuse, about a
second of writes), sooner after `CHECKPOINT_LOG_BYTES` of log, and sooner
once the file has grown by `CHECKPOINT_GROWTH_SHARE` of the map since the
last one began (pages kept for a checkpoint make the file grow; this bounds
how much of the map they take under a heavy write load). The clock is
injected; the rule is a pure function of what it is given.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from ringkv_node.storage import checkpoint
from ringkv_node.storage.errors import StorageError
from ringkv_node.storage.wal import Wal

__all__ = [
    "CHECKPOINT_GROWTH_SHARE",
    "CHECKPOINT_INTERVAL_S",
    "CHECKPOINT_LOG_BYTES",
    "Checkpointer",
    "Rule",
    "checkpoint_due",
]

log = logging.getLogger("ringkv.storage")

CHECKPOINT_INTERVAL_S = 1.0
CHECKPOINT_LOG_BYTES = 64 << 20
CHECKPOINT_GROWTH_SHARE = 1 / 32


@dataclass(frozen=True, slots=True)
class Rule:
    """When a checkpoint is due: after `interval_s`, `log_bytes` of log, or growth
    of the file by `growth_share` of the map, whichever comes first."""

    interval_s: float = CHECKPOINT_INTERVAL_S
    log_bytes: int = CHECKPOINT_LOG_BYTES
    growth_share: float = CHECKPOINT_GROWTH_SHARE


def default_rule() -> Rule:
    """The rule of this module's constants as they are now (tests change them)."""
    return Rule(CHECKPOINT_INTERVAL_S, CHECKPOINT_LOG_BYTES, CHECKPOINT_GROWTH_SHARE)


def checkpoint_due(
    rule: Rule, *, since_last_s: float, log_bytes: int, grown_bytes: int, map_size: int
) -> bool:
    """Is a checkpoint due, `since_last_s` after the last one began, with
    `log_bytes` of log and the file `grown_bytes` larger since then? Pure."""
    return (
        since_last_s >= rule.interval_s
        or log_bytes >= rule.log_bytes
        or grown_bytes >= map_size * rule.growth_share
    )


class Checkpointer:
    """Checkpoints of one LMDB environment and its log (see the module's doc)."""

    def __init__(
        self,
        path: str,
        env: lmdb.Environment,
        pin: lmdb.Transaction,
        meta_fd: int,
        page_size: int,
        wal: Wal,
        *,
        rule: Rule | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._env = env
        self._pin: lmdb.Transaction | None = pin  # the snapshot a crash rolls back to
        self._meta_fd = meta_fd
        self._page_size = page_size
        self._wal = wal
        self._rule = default_rule() if rule is None else rule
        self._monotonic = monotonic
        self._thread: threading.Thread | None = None
        self._running = False  # one is under way (started on the loop, ended by its thread)
        self._began_at = 0.0  # when the last one began
        self._completed_at = 0.0  # when the last one completed
        self._pages_at_start = 0  # the file's size in pages when the last one began

    def running(self) -> bool:
        """A checkpoint is under way."""
        return self._running or (self._thread is not None and self._thread.is_alive())

    def age_s(self) -> float:
        """Seconds since the last checkpoint completed."""
        return self._monotonic() - self._completed_at

    def _pin_snapshot(self) -> tuple[lmdb.Transaction, bytes]:
        """Between two commits: pin the snapshot just committed (a read
        transaction) and copy the meta pages that describe it."""
        pin = self._env.begin()
        metas = os.pread(self._meta_fd, 2 * self._page_size, 0)
        if checkpoint.meta_txnid(metas, self._page_size) != pin.id():
            pin.abort()
            raise StorageError("LMDB's meta pages do not name the snapshot being checkpointed")
        self._began_at = self._monotonic()
        self._pages_at_start = self._env.info()["last_pgno"]
        return pin, metas

    def now(self) -> None:
        """A whole checkpoint while nothing writes (at open and at close)."""
        pin, metas = self._pin_snapshot()
        try:
            seq = self._wal.rotate()
        except BaseException:
            pin.abort()
            raise
        self._finish(pin, checkpoint.Checkpoint(self._page_size, pin.id(), seq, metas))

    def _finish(self, pin: lmdb.Transaction, ckpt: checkpoint.Checkpoint) -> None:
        """Make the pinned snapshot durable and the one to roll back to."""
        try:
            checkpoint.write_back(self._meta_fd)
            self._env.sync(True)
            checkpoint.save(self._path, ckpt)
        except BaseException:
            pin.abort()  # the previous checkpoint (and its log) still stands
            raise
        old, self._pin = self._pin, pin
        if old is not None:
            old.abort()
        self._wal.drop_before(ckpt.wal_seq)
        self._completed_at = self._monotonic()

    def due(self) -> bool:
        info = self._env.info()
        return checkpoint_due(
            self._rule,
            since_last_s=self._monotonic() - self._began_at,
            log_bytes=self._wal.appended,
            grown_bytes=(info["last_pgno"] - self._pages_at_start) * self._page_size,
            map_size=info["map_size"],
        )

    def maybe_start(self, in_order: Callable[[Callable[[], None]], None]) -> None:
        """Event loop, after batches are applied: start a checkpoint when one is due.

        The snapshot is pinned now, between commits; `in_order` (the syncer's)
        runs the log rotation once every record before the snapshot is
        written and before any after it; a thread then makes it durable."""
        if self._running or not self.due():
            return
        try:
            pin, metas = self._pin_snapshot()
        except (OSError, lmdb.Error, StorageError) as exc:
            log.error("checkpoint not started: %s", exc)
            return
        self._running = True
        in_order(functools.partial(self._rotate_then_checkpoint, pin, metas))

    def _rotate_then_checkpoint(self, pin: lmdb.Transaction, metas: bytes) -> None:
        """Syncer thread: later records go to a new segment; checkpoint in the background."""
        try:
            seq = self._wal.rotate()
        except OSError as exc:
            pin.abort()
            self._running = False
            log.error("checkpoint not started: %s", exc)
            return
        ckpt = checkpoint.Checkpoint(self._page_size, pin.id(), seq, metas)
        self._thread = threading.Thread(
            target=self._background, args=(pin, ckpt), name="ringkv-checkpoint", daemon=True
        )
        self._thread.start()

    def _background(self, pin: lmdb.Transaction, ckpt: checkpoint.Checkpoint) -> None:
        try:
            self._finish(pin, ckpt)
        except (OSError, lmdb.Error) as exc:
            log.error(
                "checkpoint failed (the log is kept; next try in %ss): %s",
                self._rule.interval_s,
                exc,
            )
        finally:
            self._running = False

    def close(self) -> None:
        """Wait for a checkpoint under way, take a last one (the log is then empty),
        and let the pinned snapshot go. Nothing may write meanwhile."""
        if self._thread is not None:
            self._thread.join()
        try:
            self.now()
        except (OSError, lmdb.Error, StorageError) as exc:
            log.error("last checkpoint failed; the next start replays the log: %s", exc)
        if self._pin is not None:
            self._pin.abort()
            self._pin = None
