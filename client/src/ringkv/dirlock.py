"""One process per data directory: an exclusive `flock` on `<dir>/LOCK`.

Two node processes on one data directory lose acknowledged writes: the
second writes the checkpoint's meta pages back over the first one's live
LMDB file (seen: 478 of 10,004 acknowledged writes gone after a restart).
So a node takes this lock before it reads or writes anything else in its
directory, and `ringkv local up` takes one on the cluster's directory and
probes its nodes' before it starts any. The lock file holds the holder's
pid, for the message the next process prints.

`flock` locks belong to the open file and go away with the process, even a
SIGKILLed one: no stale lock is ever left behind. (On NFS, `flock` is only
as good as the server's locking.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

__all__ = ["LOCK_FILE", "DirLock", "DirLockedError", "acquire", "holder", "locked"]

LOCK_FILE = "LOCK"


class DirLockedError(Exception):
    """Another process holds the directory's lock (`.pid`: its pid, if known)."""

    def __init__(self, path: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"{path} is in use by {who} (it holds {os.path.join(path, LOCK_FILE)})")
        self.path = path
        self.pid = pid


class DirLock:
    """A held lock on a directory; `release()` (or process exit) lets it go."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def acquire(path: str) -> DirLock:
    """Lock `path` (created if missing) for this process, or raise DirLockedError.

    Opening the lock file is all a refused process does in the directory.
    """
    os.makedirs(path, exist_ok=True)
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise DirLockedError(path, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DirLock(path, fd)


@contextlib.contextmanager
def locked(path: str) -> Iterator[DirLock]:
    """`acquire` for the length of a `with` block."""
    lock = acquire(path)
    try:
        yield lock
    finally:
        lock.release()


def holder(path: str) -> int | None:
    """The pid holding `path`'s lock (0 when unknown), or None when nobody does.

    Looks without creating anything: a directory with no lock file is free.
    """
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        return None
    finally:
        os.close(fd)
