"""`ringkv.dirlock`: one holder per directory; the pid is named; nothing stale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringkv import dirlock


def test_a_second_lock_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    assert dirlock.holder(str(tmp_path)) is None  # no lock file: free, and none is made
    assert not (tmp_path / dirlock.LOCK_FILE).exists()
    with dirlock.locked(str(tmp_path / "d")) as lock:
        assert (tmp_path / "d" / dirlock.LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(dirlock.DirLockedError) as err:
            dirlock.acquire(lock.path)  # another open file: refused even in this process
        assert err.value.pid == os.getpid()
        assert f"in use by pid {os.getpid()}" in str(err.value)
        assert dirlock.holder(lock.path) == os.getpid()
    assert dirlock.holder(str(tmp_path / "d")) is None
    dirlock.acquire(str(tmp_path / "d")).release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = "import sys, time; from ringkv import dirlock; dirlock.acquire(sys.argv[1]); "
    code += "print('held', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"held\n"
        assert dirlock.holder(str(tmp_path)) == child.pid
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert dirlock.holder(str(tmp_path)) is None
    with dirlock.locked(str(tmp_path)):
        pass
