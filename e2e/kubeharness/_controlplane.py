"""etcd + kube-apiserver (+ optional kube-controller-manager) on loopback.

The tier-3 control plane: a real API server in a few seconds, no Docker, no
nodes. Every process binds 127.0.0.1 on a free port, keeps its state and logs
in one work directory, and is stopped (SIGTERM, then SIGKILL) by ``stop()``.
Unless started detached (``make apiserver-up``), children get PDEATHSIG so a
killed test run cannot leak them.

Flags follow controller-runtime's envtest and hack/local-up-cluster.sh:
token authentication for one ``system:masters`` user, RBAC, and the
ServiceAccount admission plugin off (nothing else would create the
``default`` ServiceAccount the plugin requires before a Pod is admitted).
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ._assets import Binaries, find_binaries
from ._pki import Pki, make_pki

SERVICE_CIDR = "10.0.0.0/24"
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """A component did not start; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class _Process:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, *, detach: bool) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if detach else _die_with_parent,
            )

    def exited(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)


def _get(
    url: str, *, context: ssl.SSLContext | None = None, token: str | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2, context=context) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


@dataclass
class ControlPlane:
    """A loopback Kubernetes API server. Use as a context manager or call start()/stop()."""

    controller_manager: bool = False
    workdir: Path | None = None
    detach: bool = False
    start_timeout: float = 60.0
    binaries: Binaries | None = None

    url: str = field(init=False, default="")
    token: str = field(init=False, default="")
    kubeconfig: Path = field(init=False)
    pki: Pki = field(init=False)
    _procs: list[_Process] = field(init=False, default_factory=list)
    _own_workdir: bool = field(init=False, default=False)
    startup_seconds: float = field(init=False, default=0.0)

    # ---- lifecycle -------------------------------------------------------
    def start(self) -> ControlPlane:
        t0 = time.monotonic()
        self.binaries = self.binaries or find_binaries(controller_manager=self.controller_manager)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="ringkv-kube-", dir=_fast_tmp()))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = make_pki(self.workdir / "pki")
        self.token = secrets.token_hex(16)
        (self.workdir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        try:
            self._start_with_retries()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what tests use --------------------------------------------------
    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.popen.pid for p in self._procs if p.popen is not None}

    def logs(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {p.name} ({p.log_path}) ---\n{p.log_tail(lines)}" for p in self._procs
        )

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the API server as the admin user (status, body)."""
        return _get(self.url + path, context=self.ssl_context(), token=self.token)

    # ---- internals -------------------------------------------------------
    def _start_with_retries(self, attempts: int = 3) -> None:
        # Free ports are picked then bound by the children: another process can
        # take one in between. Retry the whole start on such a failure.
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(attempt)
                return
            except ControlPlaneError as e:
                for proc in reversed(self._procs):
                    proc.stop()
                self._procs.clear()
                if attempt == attempts or "address already in use" not in str(e):
                    raise

    def _start_once(self, attempt: int) -> None:
        assert self.binaries is not None
        assert self.workdir is not None
        wd, b = self.workdir, self.binaries
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd_args = [
            str(b.etcd),
            f"--name=ringkv-{attempt}",
            f"--data-dir={wd / f'etcd-{attempt}'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=ringkv-{attempt}=http://127.0.0.1:{peer_port}",
            "--log-level=warn" if _etcd_supports(b.etcd, "--log-level") else "--debug=false",
        ]
        if _etcd_supports(b.etcd, "--unsafe-no-fsync"):  # etcd >= 3.5: much faster on real disks
            etcd_args.append("--unsafe-no-fsync")
        etcd = self._spawn("etcd", etcd_args)
        self._wait("etcd", lambda: _get(etcd_url + "/health")[1].find('"true"') >= 0, etcd)

        self.url = f"https://127.0.0.1:{api_port}"
        api = self._spawn(
            "kube-apiserver",
            [
                str(b.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={wd / 'pki'}",
                f"--tls-cert-file={self.pki.serving_cert}",
                f"--tls-private-key-file={self.pki.serving_key}",
                f"--client-ca-file={self.pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.pki.sa_key}",
                f"--service-account-signing-key-file={self.pki.sa_key}",
                f"--token-auth-file={wd / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
        )
        self.kubeconfig = self._write_kubeconfig(wd / "kubeconfig")
        ctx = self.ssl_context()
        self._wait(
            "kube-apiserver",
            lambda: _get(self.url + "/readyz", context=ctx, token=self.token)[0] == 200,
            api,
        )

        if self.controller_manager:
            self.start_controller_manager()

    def start_controller_manager(self) -> None:
        """Add kube-controller-manager: StatefulSet -> Pods/PVCs, garbage collection, namespaces."""
        if any(p.name == "kube-controller-manager" for p in self._procs):
            return
        assert self.workdir is not None
        if self.binaries is None or self.binaries.kube_controller_manager is None:
            self.binaries = find_binaries(controller_manager=True)
        kcm_bin = self.binaries.kube_controller_manager
        assert kcm_bin is not None
        kcm_port = free_port()
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(kcm_bin),
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.workdir / 'kcm-pki'}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Pods never run here (no nodes): skip controllers that only act on nodes.
                "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-ttl",
                "--v=1",
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = (
            ssl.CERT_NONE
        )  # kcm's own self-signed serving cert; only /healthz is read
        self._wait(
            "kube-controller-manager",
            lambda: _get(f"https://127.0.0.1:{kcm_port}/healthz", context=insecure)[0] == 200,
            kcm,
        )

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        assert self.workdir is not None
        proc = _Process(name, argv, self.workdir / f"{name}.log")
        self._procs.append(proc)
        proc.start(detach=self.detach)
        return proc

    def _wait(self, what: str, ready: object, proc: _Process) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if (rc := proc.exited()) is not None:
                raise ControlPlaneError(
                    f"{what} exited with code {rc} during start-up; "
                    f"log {proc.log_path}:\n{proc.log_tail()}"
                )
            try:
                if ready():  # type: ignore[operator]
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise ControlPlaneError(
            f"{what} not ready after {self.start_timeout:.0f} s; "
            f"log {proc.log_path}:\n{proc.log_tail()}"
        )

    def _write_kubeconfig(self, path: Path) -> Path:
        # JSON is valid YAML; the kubernetes client and kubectl both read it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "ringkv-test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.pki.ca_cert)},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "ringkv-test",
                    "context": {"cluster": "ringkv-test", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "ringkv-test",
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path


_FLAG_CACHE: dict[tuple[str, str], bool] = {}


def _etcd_supports(etcd: Path, flag: str) -> bool:
    key = (str(etcd), flag)
    if key not in _FLAG_CACHE:
        out = subprocess.run([str(etcd), "--help"], capture_output=True, text=True, timeout=10)
        _FLAG_CACHE[key] = flag in (out.stdout + out.stderr)
    return _FLAG_CACHE[key]


def _fast_tmp() -> str | None:
    """etcd fsyncs on every write: a tmpfs keeps that off the disk when one is usable."""
    shm = os.environ.get("RINGKV_KUBE_TMP", "/dev/shm")
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    big_enough = st.f_bavail * st.f_frsize >= 512 * 2**20  # etcd preallocates a 64 MiB WAL
    return shm if big_enough and os.access(shm, os.W_OK) else None
