"""``python -m kubeharness up|down|status``: a tier-3 control plane for people.

``up`` starts etcd + kube-apiserver (+ kube-controller-manager unless
``--no-controller-manager``) detached, with state in ``--state-dir``
(default ``~/.cache/ringkv/apiserver``), and prints the KUBECONFIG to use.
``down`` stops it and removes the state. Used by ``make apiserver-up/-down``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ._controlplane import ControlPlane


def _default_state_dir() -> Path:
    return Path(os.environ.get("RINGKV_CACHE", Path.home() / ".cache" / "ringkv")) / "apiserver"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _read_state(d: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((d / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def up(d: Path, controller_manager: bool) -> int:
    state = _read_state(d)
    if state and all(_alive(int(p)) for p in state["pids"].values()):
        print(f"already up: {state['url']}\nexport KUBECONFIG={state['kubeconfig']}")
        return 0
    down(d, quiet=True)
    cp = ControlPlane(controller_manager=controller_manager, workdir=d, detach=True)
    cp.start()
    state = {"url": cp.url, "kubeconfig": str(cp.kubeconfig), "pids": cp.pids, "token": cp.token}
    (d / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    print(f"kube-apiserver up at {cp.url} in {cp.startup_seconds:.1f} s (logs in {d})")
    print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0


def down(d: Path, quiet: bool = False) -> int:
    state = _read_state(d)
    pids = [int(p) for p in state["pids"].values()] if state else []
    for pid in reversed(pids):  # controller-manager, apiserver, then etcd
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
    if not quiet:
        print("kube-apiserver down" if pids else "nothing was running")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kubeharness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--state-dir", type=Path, default=_default_state_dir())
    ap.add_argument("--no-controller-manager", action="store_true")
    a = ap.parse_args(argv)
    if a.command == "up":
        return up(a.state_dir, not a.no_controller_manager)
    if a.command == "down":
        return down(a.state_dir)
    state = _read_state(a.state_dir)
    if not state or not all(_alive(int(p)) for p in state["pids"].values()):
        print("down")
        return 1
    print(f"up: {state['url']}\nexport KUBECONFIG={state['kubeconfig']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
