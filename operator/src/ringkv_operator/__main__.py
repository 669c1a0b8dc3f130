"""`ringkv-operator`: kopf's run, with leader election, metrics, scope and log format.

    ringkv-operator                          # every namespace (needs a ClusterRole)
    ringkv-operator -n team-a -n team-b      # only these (Roles are enough)
    ringkv-operator --resolver map:urls.json # reach nodes through a map (development, tests)

Every flag has a `RINGKV_OPERATOR_*` variable. `/healthz` and `/readyz` are on
`--health-port`, Prometheus metrics on `--metrics-port`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence

import kopf

from ringkv_operator import handlers  # noqa: F401  (registers the handlers)
from ringkv_operator.health import HealthServer
from ringkv_operator.k8s import Kube, api_client
from ringkv_operator.leader import LeaderElector
from ringkv_operator.metrics import Metrics
from ringkv_operator.nodes import resolver_from
from ringkv_operator.reconciler import DEFAULT_NODE_IMAGE, OperatorConfig, Reconciler

__all__ = ["main", "parse_args"]

log = logging.getLogger("ringkv.operator")

_FORMATS = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}


def _own_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip()
    except OSError:
        return "default"


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> argparse.Namespace:
    e = env.get
    p = argparse.ArgumentParser(
        prog="ringkv-operator",
        description="The ringkv operator: reconciles KVClusters. "
        "Every flag may also be given as RINGKV_OPERATOR_<FLAG>.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[s for s in (e("RINGKV_OPERATOR_NAMESPACES") or "").split(",") if s],
        help="watch this namespace (repeat for more); none: every namespace",
    )
    p.add_argument(
        "--node-image",
        default=e("RINGKV_OPERATOR_NODE_IMAGE") or DEFAULT_NODE_IMAGE,
        help="the node image of KVClusters that name none",
    )
    p.add_argument(
        "--resolver",
        default=e("RINGKV_OPERATOR_RESOLVER") or "dns",
        help="how to reach nodes: dns (pod DNS, in a cluster) or map:FILE "
        '(JSON {"<ns>/<pod>": URL}, for running outside the cluster)',
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=int(e("RINGKV_OPERATOR_HEALTH_PORT") or 8081),
        help="/healthz (alive) and /readyz (waiting for the Lease, or running) port (0: none)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(e("RINGKV_OPERATOR_METRICS_PORT") or 8082),
        help="Prometheus /metrics port (0: none)",
    )
    p.add_argument(
        "--log-format",
        choices=sorted(_FORMATS),
        default=e("RINGKV_OPERATOR_LOG_FORMAT") or "plain",
        help="log lines as plain text, kopf's full format, or JSON",
    )
    p.add_argument(
        "--network-policy",
        action=argparse.BooleanOptionalAction,
        default=(e("RINGKV_OPERATOR_NETWORK_POLICY") or "").lower() in ("1", "true", "on", "yes"),
        help="give every KVCluster a NetworkPolicy: into its pods only its peers, this "
        "operator and pods labelled ringkv.io/client=true",
    )
    p.add_argument(
        "--network-policy-from",
        default=e("RINGKV_OPERATOR_NETWORK_POLICY_FROM") or "",
        help="more peers those policies let in: a JSON list of NetworkPolicyPeer objects",
    )
    p.add_argument("--verbose", action="store_true", help="log kopf's own progress too")
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=(e("RINGKV_OPERATOR_LEADER_ELECTION") or "true").lower() not in ("0", "false"),
        help="hold a Lease so that one instance acts at a time",
    )
    p.add_argument(
        "--lease-namespace",
        default=e("RINGKV_OPERATOR_LEASE_NAMESPACE") or e("POD_NAMESPACE") or _own_namespace(),
        help="namespace of the leader Lease (default: the operator's own)",
    )
    p.add_argument("--lease-name", default=e("RINGKV_OPERATOR_LEASE_NAME") or "ringkv-operator")
    p.add_argument(
        "--lease-duration",
        type=float,
        default=float(e("RINGKV_OPERATOR_LEASE_DURATION") or 15),
        help="seconds an unrenewed Lease stays taken",
    )
    args = p.parse_args(list(argv))
    try:
        resolver_from(args.resolver)
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    kopf.configure(verbose=args.verbose, log_format=_FORMATS[args.log_format])
    logging.getLogger("ringkv").setLevel(logging.INFO)
    if not args.verbose:
        logging.getLogger("kopf").setLevel(logging.WARNING)
    try:
        config = OperatorConfig.from_env(os.environ)
        extra = tuple(json.loads(args.network_policy_from or "[]"))
    except ValueError as exc:
        print(f"ringkv-operator: {exc}", file=sys.stderr)
        return 2
    config = dataclasses.replace(
        config,
        node_image=args.node_image,
        resolver=args.resolver,
        network_policy=args.network_policy,
        network_policy_from=extra or config.network_policy_from,
    )
    metrics = Metrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    kube = Kube(api_client())
    identity = f"{socket.gethostname()}_{os.getpid()}"
    stop = threading.Event()
    lost = threading.Event()
    kopf_ready = threading.Event()  # kopf sets it once it runs
    waiting = threading.Event()  # set while it waits for the Lease
    health = None
    if args.health_port:
        # Ready while it waits for the Lease too: a Deployment's rolling update
        # waits for the new pod to be Ready before it stops the old one, which
        # holds the Lease until then (a deadlock, if waiting were not ready).
        health = HealthServer(
            args.health_port,
            alive=lambda: not lost.is_set(),
            ready=lambda: not lost.is_set() and (waiting.is_set() or kopf_ready.is_set()),
        ).start()
    elector = None
    if args.leader_election:
        elector = LeaderElector(
            kube, args.lease_namespace, args.lease_name, identity, duration_s=args.lease_duration
        )
        log.info("waiting to lead (Lease %s/%s)", args.lease_namespace, args.lease_name)
        # Until kopf runs (and handles signals itself), SIGTERM ends the wait.
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        waiting.set()
        try:
            if not elector.acquire(stop):
                return 0
        finally:
            waiting.clear()
            signal.signal(signal.SIGTERM, previous)
        metrics.leader.set(1)

        def on_lost() -> None:
            # As a SIGTERM would: kopf stops its loops and lets each turn in
            # flight finish. (A threading.Event as kopf's stop_flag would be
            # waited on by a thread of kopf's executor, which then blocks the
            # exit of a kopf stopped by a signal.)
            lost.set()
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(
            target=elector.keep, args=(stop, on_lost), name="ringkv-lease", daemon=True
        ).start()
    reconciler = Reconciler(kube, config, metrics=metrics)
    memo = kopf.Memo(config=config, reconciler=reconciler)
    try:
        # kopf names itself after the user, and uid 10001 has no passwd entry.
        os.environ.setdefault("USER", "ringkv-operator")
        kopf.run(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            ready_flag=kopf_ready,
            memo=memo,
        )
    finally:
        stop.set()
        if health is not None:
            health.stop()
        metrics.leader.set(0)
        if elector is not None and not lost.is_set():
            elector.release()
    return 1 if lost.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
