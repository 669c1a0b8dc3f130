"""One process per data directory (issue 16 §1), with real node processes.

The scenario that lost 478 of 10,004 acknowledged writes: one node serves
a write load, a second `ringkv-node` is started on the same `--data-dir`
(another port), then the first is SIGKILLed and restarted. Now the second
refuses at once and every acknowledged write is still there.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ringkv import Client
from ringkv.dirlock import LOCK_FILE

from nodeproc import NodeProcess, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


class Writer:
    """Four threads putting distinct keys; remembers every acknowledged one."""

    def __init__(self, url: str, limit: int = 50_000) -> None:
        self.url = url
        self.limit = limit
        self.acked: set[str] = set()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(4)]

    def _run(self, tid: int) -> None:
        with Client(self.url, timeout=2, retry=None) as kv:
            for n in range(self.limit):
                if self.stop.is_set():
                    return
                key = f"w{tid}-{n}"
                try:
                    kv.put(key, key)
                except Exception:
                    time.sleep(0.05)  # the node is down: keep trying until told to stop
                    continue
                with self._lock:
                    self.acked.add(key)

    def __enter__(self) -> Writer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def wait_for(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.acked) >= count, f"only {len(self.acked)} writes acknowledged"


def test_a_second_node_on_the_same_directory_refuses_and_loses_nothing(tmp_path: Path) -> None:
    first = NodeProcess("n1", tmp_path)
    first.start()
    data_dir = tmp_path / "n1"
    try:
        with Writer(first.url) as load:
            load.wait_for(500)
            second = NodeProcess("n1", tmp_path, port=free_port())  # same --data-dir
            started = time.monotonic()
            out = subprocess.run(second.command(), capture_output=True, text=True, timeout=60)
            assert out.returncode == 1, out.stderr
            assert time.monotonic() - started < 20  # at once, not after a recovery attempt
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1, out.stderr
            assert str(data_dir) in lines[0]
            assert first.proc is not None
            assert f"pid {first.proc.pid}" in lines[0]
            with pytest.raises(OSError):  # it never listened
                urllib.request.urlopen(second.url + "/healthz", timeout=2)
            assert (data_dir / LOCK_FILE).read_text().strip() == str(first.proc.pid)
            acked_before = len(load.acked)
            load.wait_for(acked_before + 500)  # the first node went on serving
            first.kill()  # SIGKILL under load
        acked = set(load.acked)
        first.start()
        with Client(first.url) as kv:
            lost = [k for k in sorted(acked) if kv.get(k) != k.encode()]
        assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"
    finally:
        first.kill()


def test_the_lock_goes_with_the_process(tmp_path: Path) -> None:
    node = NodeProcess("n1", tmp_path)
    node.start()
    node.kill()  # no clean shutdown: the kernel drops the flock
    node.start()  # so the next one on the directory starts
    try:
        with urllib.request.urlopen(node.url + "/readyz", timeout=5) as resp:
            assert resp.status == 200
    except urllib.error.URLError as exc:  # pragma: no cover - diagnostic
        pytest.fail(f"{exc}: {node.log()}")
    finally:
        node.kill()
