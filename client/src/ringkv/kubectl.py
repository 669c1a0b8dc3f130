"""`kubectl ringkv`: the kubectl plugin for KVClusters (the `kubectl-ringkv` entry point).

    kubectl ringkv status kv -n shop          phase, ring, conditions, a line per pod
    kubectl ringkv connect kv -n shop         port-forward svc/kv; prints RINGKV_* for `ringkv`

kubectl runs any `kubectl-<name>` on PATH as `kubectl <name>`; `pip install
'ringkv[kube]'` installs this one with the kubernetes client it needs. The
base `ringkv` install has the script too, and without the client it says what
to install: `kubernetes` is imported here only, and only when a command runs.

A thin shell over `ringkv._kubeview`, where everything it prints or decides
is: this module reads the kubeconfig, the KVCluster and its token Secret,
and runs (and ends) `kubectl port-forward`. The options are kubectl's:
`-n`, `--context`, `--kubeconfig` (default $KUBECONFIG, read when the command
runs, else ~/.kube/config), before or after the command.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from ringkv import _kubeview as view
from ringkv.cli.common import Help, positive_float
from ringkv.digits import is_digits
from ringkv.exits import BAD_INPUT, CLUSTER_ERROR, NOT_FOUND, OK

__all__ = ["build_parser", "main"]

PROG = "kubectl-ringkv"
INSTALL_HINT = "pip install 'ringkv[kube]'"
FORWARD_START_S = 90.0  # kubectl itself waits up to 60 s (--pod-running-timeout) for a pod
SERVICE_ACCOUNT_NS = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
EPILOG = """exit codes (as the ringkv CLI's):
  0  ok
  1  not found: no such KVCluster (or namespace, or token Secret)
  2  bad input: a wrong option or name, a kubeconfig or context that is not there,
     the API server refusing the request (400, 401, 403, 422), no kubernetes client
  3  cluster or API error: no answer from the API server, any other error answer,
     a port-forward that ends; `status`: a pod not ready or unreachable, or the
     phase Degraded or Failed

Not here yet: `backup` (the operator does not run KVBackups yet, issue 20).
Meanwhile `ringkv dump` through `kubectl ringkv connect` copies the data.
"""


class PluginError(Exception):
    """A failure the plugin reports in one line, with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: end as on Ctrl-C."""


# -- the API server ---------------------------------------------------------------


def _kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError:
        raise PluginError(
            f"the kubectl plugin needs the kubernetes client: {INSTALL_HINT}", BAD_INPUT
        ) from None
    return kubernetes


def _kubeconfig_docs(paths: list[str]) -> list[dict[str, Any]]:
    import yaml  # a dependency of kubernetes

    docs = []
    for path in paths:
        try:
            with open(path) as f:
                doc = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as exc:
            raise PluginError(f"cannot read the kubeconfig {path}: {exc}", BAD_INPUT) from None
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


class Kube:
    """The API calls the plugin makes, with the namespace and context it resolved."""

    def __init__(self, args: argparse.Namespace) -> None:
        k = _kubernetes()
        self._k = k
        self.timeout = args.request_timeout
        spec = args.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        paths = [os.path.expanduser(p) for p in spec.split(os.pathsep) if p]
        present = [p for p in paths if os.path.exists(p)]
        cfg = k.client.Configuration()
        try:
            if not present and os.environ.get("KUBERNETES_SERVICE_HOST") and not args.context:
                k.config.load_incluster_config(client_configuration=cfg)  # kubectl does too
                self.context = None
                namespace = _read(SERVICE_ACCOUNT_NS)
            elif not present:
                hint = "" if args.kubeconfig else " (give --kubeconfig, or set $KUBECONFIG)"
                raise PluginError(f"no kubeconfig at {spec}{hint}", BAD_INPUT)
            else:
                self.context, namespace = view.pick_context(_kubeconfig_docs(present), args.context)
                k.config.load_kube_config(
                    config_file=os.pathsep.join(present),
                    context=self.context,
                    client_configuration=cfg,
                )
        except (ValueError, k.config.ConfigException) as exc:
            raise PluginError(f"kubeconfig: {_one_line(exc)}", BAD_INPUT) from None
        self.namespace = args.namespace or namespace or "default"
        if not view.valid_name(self.namespace):
            raise PluginError(
                f"namespace {self.namespace!r} is not a valid name (a DNS label)", BAD_INPUT
            )
        self.kubeconfig = args.kubeconfig
        self.server = cfg.host
        self.api = k.client.ApiClient(configuration=cfg)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import urllib3

        try:
            yield
        except self._k.client.ApiException as exc:
            if exc.status == 0:  # the client's own failure (a TLS or config problem)
                raise PluginError(_one_line(exc.reason), CLUSTER_ERROR) from None
            message, code = view.api_error(exc.status, exc.reason, exc.body)
            raise PluginError(message, code) from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise PluginError(
                f"no answer from the API server at {self.server}: {_one_line(reason)}",
                CLUSTER_ERROR,
            ) from None

    def cluster(self, name: str) -> dict[str, Any]:
        custom = self._k.client.CustomObjectsApi(self.api)
        try:
            with self._errors():
                obj: dict[str, Any] = custom.get_namespaced_custom_object(
                    view.GROUP,
                    view.VERSION,
                    self.namespace,
                    view.PLURAL,
                    name,
                    _request_timeout=self.timeout,
                )
                return obj
        except PluginError as exc:
            if exc.code != NOT_FOUND:
                raise
        where = f'namespace "{self.namespace}"'
        if self._namespace_missing():
            where += " (the namespace does not exist)"
        raise PluginError(f'kvcluster "{name}" not found in {where}', NOT_FOUND)

    def _namespace_missing(self) -> bool:
        """Whether the namespace is known not to exist (False when we may not look)."""
        core = self._k.client.CoreV1Api(self.api)
        try:
            with self._errors():
                core.read_namespace(self.namespace, _request_timeout=self.timeout)
        except PluginError as exc:
            return exc.code == NOT_FOUND
        return False

    def token(self, cluster: dict[str, Any]) -> str:
        name = view.token_secret(cluster)
        core = self._k.client.CoreV1Api(self.api)
        try:
            with self._errors():
                secret = core.read_namespaced_secret(
                    name, self.namespace, _request_timeout=self.timeout
                )
        except PluginError as exc:
            if exc.code == NOT_FOUND:
                raise PluginError(
                    f'the token Secret "{name}" is not in namespace "{self.namespace}"', NOT_FOUND
                ) from None
            raise
        value = (secret.data or {}).get("token")
        if not value:
            raise PluginError(f'the Secret "{name}" has no "token" key', NOT_FOUND)
        return base64.b64decode(value).decode()

    def create_backup(self, obj: Mapping[str, Any]) -> None:
        custom = self._k.client.CustomObjectsApi(self.api)
        with self._errors():
            custom.create_namespaced_custom_object(
                view.GROUP,
                view.VERSION,
                self.namespace,
                view.BACKUP_PLURAL,
                dict(obj),
                _request_timeout=self.timeout,
            )

    def backup(self, name: str) -> dict[str, Any]:
        custom = self._k.client.CustomObjectsApi(self.api)
        with self._errors():
            obj: dict[str, Any] = custom.get_namespaced_custom_object(
                view.GROUP,
                view.VERSION,
                self.namespace,
                view.BACKUP_PLURAL,
                name,
                _request_timeout=self.timeout,
            )
            return obj

    def close(self) -> None:
        self.api.close()


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())


# -- commands -----------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not view.valid_name(name):
        raise PluginError(f"{name!r} is not a KVCluster name (a DNS label)", BAD_INPUT)


def cmd_status(args: argparse.Namespace) -> int:
    _check_name(args.name)
    kube = Kube(args)
    try:
        obj = kube.cluster(args.name)
    finally:
        kube.close()
    if args.output == "json":
        print(json.dumps(obj.get("status") or {}, indent=2))
    else:
        sys.stdout.write(view.format_status(obj, time.time()))
    unwell = view.problems(obj)
    if unwell:
        print(f"{PROG}: not healthy: {', '.join(unwell)}", file=sys.stderr)
        return CLUSTER_ERROR
    return OK


def cmd_backup(args: argparse.Namespace) -> int:
    _check_name(args.name)
    kube = Kube(args)
    try:
        cluster = kube.cluster(args.name)
        try:
            dest = view.backup_destination(
                cluster,
                pvc=args.pvc,
                s3=args.s3,
                s3_endpoint=args.s3_endpoint,
                s3_region=args.s3_region,
                s3_secret=args.s3_secret,
                s3_path_style=args.s3_path_style,
            )
        except ValueError as exc:
            raise PluginError(str(exc), BAD_INPUT) from None
        name = args.backup_name or view.backup_name(args.name, time.time())
        if not view.valid_name(name):
            raise PluginError(f"{name!r} is not a KVBackup name (a DNS label)", BAD_INPUT)
        kube.create_backup(view.backup_object(args.name, name, dest, args.verify))
        print(f"kvbackup/{name} created", flush=True)
        if args.no_wait:
            return OK
        return _follow(kube, name, args.timeout)
    finally:
        kube.close()


def _follow(kube: Kube, name: str, timeout: float) -> int:
    """A line per change of the KVBackup's status until it completed or failed."""
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        status = kube.backup(name).get("status") or {}
        phase = status.get("phase")
        line = view.backup_line(name, status, time.monotonic() - started)
        shown = line.split(" | ", 2)[::2]  # without the seconds: print changes only
        if shown != last.split(" | ", 2)[::2]:
            print(line, flush=True)
            last = line
        if phase == "Completed":
            return OK
        if phase == "Failed":
            return CLUSTER_ERROR
        time.sleep(1.0)
    print(
        f"{PROG}: kvbackup/{name} did not finish in {timeout:.0f} s; it goes on "
        f"(kubectl get kvb {name} -w)",
        file=sys.stderr,
    )
    return CLUSTER_ERROR


def _drain(stream: IO[str], ports: queue.Queue[int | None]) -> None:
    """Read kubectl's stdout to its end (a full pipe would stall it): the first
    `Forwarding from` line gives the port; the `Handling connection` lines go."""
    found = False
    for line in stream:
        if not found:
            port = view.forwarded_port(line)
            if port is not None:
                ports.put(port)
                found = True
    if not found:
        ports.put(None)


def _keep_tail(stream: IO[str], tail: collections.deque[str]) -> None:
    for line in stream:
        tail.append(line)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (the terminal closed) end `connect` as Ctrl-C does."""

    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cmd_connect(args: argparse.Namespace) -> int:
    _check_name(args.name)
    kube = Kube(args)
    try:
        cluster = kube.cluster(args.name)
        token = kube.token(cluster)
    finally:
        kube.close()
    argv = view.port_forward_argv(
        os.environ.get("KUBECTL") or "kubectl",
        args.name,
        kube.namespace,
        args.port,
        context=args.context,
        kubeconfig=kube.kubeconfig,
    )
    with _stop_on_signals():
        try:
            # its own session: Ctrl-C in the terminal reaches this process, which ends it
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise PluginError(
                f"cannot run {argv[0]}: {exc.strerror} (put kubectl on PATH or set $KUBECTL)",
                BAD_INPUT,
            ) from None
        try:
            return _forward(args, kube.namespace, token, proc)
        except KeyboardInterrupt:  # Ctrl-C, or _Stopped
            return OK
        finally:
            _end(proc)


def _forward(args: argparse.Namespace, namespace: str, token: str, proc: Any) -> int:
    ports: queue.Queue[int | None] = queue.Queue()
    tail: collections.deque[str] = collections.deque(maxlen=20)
    threading.Thread(target=_drain, args=(proc.stdout, ports), daemon=True).start()
    reader = threading.Thread(target=_keep_tail, args=(proc.stderr, tail), daemon=True)
    reader.start()
    try:
        port = ports.get(timeout=FORWARD_START_S)
    except queue.Empty:
        raise PluginError(
            f"kubectl port-forward did not start forwarding in {FORWARD_START_S:.0f} s",
            CLUSTER_ERROR,
        ) from None
    if port is None:  # it ended before forwarding anything
        proc.wait()
        reader.join(5)
        raise PluginError(view.forward_failed(proc.returncode, list(tail)), CLUSTER_ERROR)
    if args.output == "json":
        doc = {"url": f"http://127.0.0.1:{port}", "token": token, "direct": False, "port": port}
        print(json.dumps(doc))
    else:
        print("\n".join(view.connect_lines(port, token)))
    sys.stdout.flush()
    print(
        f"{PROG}: forwarding 127.0.0.1:{port} to svc/{args.name} in namespace {namespace}; "
        "this stays up until Ctrl-C",
        file=sys.stderr,
        flush=True,
    )
    code = proc.wait()
    reader.join(5)
    raise PluginError(view.forward_failed(code, list(tail)), CLUSTER_ERROR)


# -- the parser -----------------------------------------------------------------------


def _port(text: str) -> int:
    if not is_digits(text) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {text!r}")
    return int(text)


def _kube_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    """kubectl's -n, --context, --kubeconfig, --request-timeout: before the command
    (`top`) or after it (then SUPPRESS, so a value given before is kept)."""

    def dflt(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    p.add_argument(
        "-n",
        "--namespace",
        default=dflt(None),
        help="the KVCluster's namespace (default: the context's, else default)",
    )
    p.add_argument(
        "--context", default=dflt(None), help="the kubeconfig context (default: its current one)"
    )
    p.add_argument(
        "--kubeconfig",
        default=dflt(None),
        help="the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )
    p.add_argument(
        "--request-timeout",
        type=positive_float,
        default=dflt(30.0),
        metavar="SECONDS",
        help="seconds to wait for each answer of the API server (default: 30)",
    )


def build_parser() -> argparse.ArgumentParser:
    from ringkv import __version__

    kube = argparse.ArgumentParser(add_help=False)
    _kube_options(kube, top=False)
    parser = argparse.ArgumentParser(
        prog="kubectl ringkv",
        description=(__doc__ or "").split("\n")[0],
        formatter_class=Help,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _kube_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    text = (
        "a KVCluster's phase, ring, rebalance, convergence, conditions and a line per pod, "
        "from its status; exits 3 when it is not healthy"
    )
    p = sub.add_parser(
        "status", parents=[kube], help=text, description=text, formatter_class=Help, epilog=EPILOG
    )
    p.add_argument("name", metavar="NAME", help="the KVCluster")
    p.add_argument(
        "-o", "--output", choices=["json"], default=None, help="json: the status as JSON"
    )
    p.set_defaults(func=cmd_status)

    text = (
        "port-forward to the KVCluster's client Service (svc/NAME, port 8080) and print "
        "RINGKV_URL, RINGKV_TOKEN and RINGKV_DIRECT=0 for the ringkv CLI; stays up until Ctrl-C"
    )
    p = sub.add_parser(
        "connect", parents=[kube], help=text, description=text, formatter_class=Help, epilog=EPILOG
    )
    p.add_argument("name", metavar="NAME", help="the KVCluster")
    p.add_argument("--port", type=_port, default=None, help="the local port (default: a free one)")
    p.add_argument(
        "-o",
        "--output",
        choices=["json"],
        default=None,
        help='json: one line {"url", "token", "direct", "port"} instead of export lines',
    )
    p.set_defaults(func=cmd_connect)

    text = (
        "create a KVBackup of the KVCluster and follow it to the end (exits 0 when it "
        "completed, 3 when it failed); to its spec.backup.destination unless --pvc or --s3"
    )
    p = sub.add_parser(
        "backup", parents=[kube], help=text, description=text, formatter_class=Help, epilog=EPILOG
    )
    p.add_argument("name", metavar="NAME", help="the KVCluster")
    p.add_argument("--name", dest="backup_name", default=None,
                   help="the KVBackup's name (default: NAME-<UTC time>)")  # fmt: skip
    p.add_argument("--pvc", default=None, metavar="CLAIM", help="to this PersistentVolumeClaim")
    p.add_argument("--s3", default=None, metavar="S3URL", help="to s3://bucket/prefix")
    p.add_argument("--s3-endpoint", default=None, help="with --s3: the endpoint URL")
    p.add_argument("--s3-region", default=None, help="with --s3: the region")
    p.add_argument("--s3-secret", default=None,
                   help="with --s3: the Secret with the AWS_* keys")  # fmt: skip
    p.add_argument("--s3-path-style", action="store_true", help="with --s3: path-style addressing")
    p.add_argument("--verify", choices=["none", "restore"], default="none",
                   help="restore: a restore drill after the backup")  # fmt: skip
    p.add_argument("--no-wait", action="store_true", help="return once the KVBackup is created")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow it")
    p.set_defaults(func=cmd_backup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except PluginError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:  # never a stack trace: one line, and the kind of error
        print(f"{PROG}: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return CLUSTER_ERROR
