"""One reconcile turn of a KVCluster: observe, decide, do one thing, report.

The I/O shell around the pure parts: it reads the KVCluster, the objects it
owns and what the nodes say; `plan.decide` chooses; this applies the owned
objects (`builders` + `apply.diff`), carries out at most one node action
(a rebalance step or an abort, through `ringkv.admin.Rebalancer`), and
writes `status.status_doc` and its events. It keeps no state between turns
that the cluster does not hold, so it can be killed anywhere and run again.
Blocking; it runs in kopf's worker threads (`handlers.py`).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ringkv_operator import builders
from ringkv_operator.apply import Ownership, diff, immutable_drift, ownership
from ringkv_operator.backups import Backups
from ringkv_operator.k8s import ApiException, Kube
from ringkv_operator.metrics import Metrics
from ringkv_operator.model import KIND, Cluster, SpecError, parse_cluster, parse_quantity
from ringkv_operator.nodes import NodeProbe, Resolver, resolver_from, urls_for
from ringkv_operator.plan import Decision, Observed, PodView, StsView, decide
from ringkv_operator.status import (
    conditions,
    events,
    failed_status,
    iso,
    parse_time,
    status_doc,
    status_patch,
)

__all__ = ["BlockedError", "OperatorConfig", "Reconciler"]

log = logging.getLogger("ringkv.operator")

DEFAULT_NODE_IMAGE = "ringkv/node:0.1.0"


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    node_image: str = DEFAULT_NODE_IMAGE
    resolver: str = "dns"
    busy_interval_s: float = 2.0
    idle_interval_s: float = 30.0
    node_timeout_s: float = 3.0
    # A NetworkPolicy per cluster: into storage pods only from their peers, this
    # operator (pods named ringkv-operator in `namespace`), pods labelled
    # ringkv.io/client=true in the cluster's namespace, and `network_policy_from`.
    network_policy: bool = False
    network_policy_from: tuple[Mapping[str, Any], ...] = ()
    namespace: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorConfig:
        extra = json.loads(env.get("RINGKV_OPERATOR_NETWORK_POLICY_FROM") or "[]")
        if not isinstance(extra, list) or not all(isinstance(p, dict) for p in extra):
            raise ValueError("RINGKV_OPERATOR_NETWORK_POLICY_FROM: a JSON list of peers")
        return cls(
            node_image=env.get("RINGKV_OPERATOR_NODE_IMAGE") or DEFAULT_NODE_IMAGE,
            resolver=env.get("RINGKV_OPERATOR_RESOLVER") or "dns",
            busy_interval_s=float(env.get("RINGKV_OPERATOR_BUSY_INTERVAL") or 2.0),
            idle_interval_s=float(env.get("RINGKV_OPERATOR_IDLE_INTERVAL") or 30.0),
            network_policy=(env.get("RINGKV_OPERATOR_NETWORK_POLICY") or "").lower()
            in ("1", "true", "on", "yes"),
            network_policy_from=tuple(extra),
            namespace=env.get("POD_NAMESPACE") or "",
        )


class BlockedError(Exception):
    """The cluster cannot go on until someone acts (the message says what); not a bug."""

    def __init__(self, message: str, phase: str = "Failed") -> None:
        super().__init__(message)
        self.phase = phase


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


@dataclass
class Reconciler:
    kube: Kube
    config: OperatorConfig = field(default_factory=OperatorConfig)
    resolver: Resolver | None = None
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    _probes: dict[str, NodeProbe] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _phases: dict[tuple[str, str], str] = field(default_factory=dict)
    backups: Backups = field(init=False)

    def __post_init__(self) -> None:
        if self.resolver is None:
            self.resolver = resolver_from(self.config.resolver)
        self.backups = Backups(
            self.kube,
            self.config.node_image,
            self.config.busy_interval_s,
            self.config.idle_interval_s,
            clock=lambda: self.clock(),
        )

    # -- the turn ----------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One turn; the seconds until the next, or None when the KVCluster is gone."""
        started = time.monotonic()
        body = self.kube.cluster(namespace, name)
        if body is None:
            self._phases.pop((namespace, name), None)
            return None
        previous: dict[str, Any] = dict(body.get("status") or {})
        generation = int(body["metadata"].get("generation") or 0)
        try:
            cluster = parse_cluster(body)
            if cluster.spec.paused:
                self._write_status(body, previous, self._paused(previous, generation))
                result, delay = "paused", self.config.idle_interval_s
            else:
                delay = self._turn(body, cluster, previous)
                result = "ok"
        except (SpecError, BlockedError) as exc:
            phase = exc.phase if isinstance(exc, BlockedError) else "Failed"
            doc = failed_status(previous, str(exc), self.clock(), generation, phase)
            self._write_status(body, previous, doc)
            result, delay = "blocked", self.config.idle_interval_s
        except Exception:
            self.metrics.errors.inc()
            raise
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)
        self.metrics.reconciles.labels(result).inc()
        return delay

    def _turn(self, body: Mapping[str, Any], cluster: Cluster, previous: dict[str, Any]) -> float:
        token = self._token(cluster)
        self._apply(cluster, builders.peers_service(cluster))
        self._apply(cluster, builders.client_service(cluster))
        self._apply_pdb(cluster)
        self._apply_network_policy(cluster)
        image = cluster.spec.image or self.config.node_image
        sts_live = self.kube.read("StatefulSet", cluster.namespace, cluster.statefulset)
        if ownership(sts_live, cluster.uid) == Ownership.FOREIGN:
            raise BlockedError(
                f"StatefulSet {cluster.statefulset} exists and is not owned by this KVCluster"
            )
        obs = self._observe(cluster, image, sts_live, token, previous)
        try:
            decision = decide(obs)
        except ValueError as exc:  # the nodes disagree in a way no step resolves
            decision = Decision(
                obs.sts.replicas if obs.sts else cluster.spec.replicas,
                obs.sts.partition if obs.sts else cluster.spec.replicas,
                "wait",
                "Degraded",
                f"cannot plan: {exc}",
                degraded=(str(exc),),
            )
        desired = builders.statefulset(
            cluster, image=image, replicas=decision.sts_replicas, partition=decision.sts_partition
        )
        drift = self._apply(cluster, desired, sts_live)
        errors = self._act(cluster, decision, token)
        expansion = self._expand_volumes(cluster)
        doc = status_doc(obs, decision, previous)
        extra: dict[str, tuple[str, str, str]] = {}
        if expansion is not None:
            extra["VolumeExpansion"] = expansion
        if drift:
            extra["SpecDrift"] = (
                "True",
                "Immutable",
                f"cannot change {', '.join(drift)} of StatefulSet {cluster.statefulset} in place",
            )
        if extra:
            doc["conditions"] = conditions(doc["conditions"], extra, obs.now, cluster.generation)
        if errors:
            doc["message"] += " (" + "; ".join(errors) + ")"
        backing_up = self.backups.cluster_turn(
            body, cluster, previous, doc, settled=decision.phase == "Ready"
        )
        self._note_commit(previous, doc)
        self._write_status(body, previous, doc)
        self._phases[(cluster.namespace, cluster.name)] = doc["phase"]
        self._count_phases()
        idle = (
            decision.action == "none" and doc["phase"] in ("Ready", "Degraded") and not backing_up
        )
        delay = self.config.idle_interval_s if idle else self.config.busy_interval_s
        due = parse_time((doc.get("backup") or {}).get("nextScheduleTime"))
        if due is not None:  # wake for the next scheduled backup, not up to a turn late
            delay = max(0.5, min(delay, due - self.clock() + 0.5))
        return delay

    # -- observing ---------------------------------------------------------------

    def _observe(
        self,
        cluster: Cluster,
        image: str,
        sts_live: Mapping[str, Any] | None,
        token: str,
        previous: Mapping[str, Any],
    ) -> Observed:
        sts = None
        if sts_live is not None:
            spec = sts_live.get("spec") or {}
            st = sts_live.get("status") or {}
            update = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
            fresh = st.get("observedGeneration") == sts_live["metadata"].get("generation")
            sts = StsView(
                replicas=int(spec.get("replicas", 0)),
                partition=int(update.get("partition", 0)),
                # Until the controller has seen the latest template, its
                # revisions describe the one before: roll nothing on them.
                update_revision=str(st.get("updateRevision", "")) if fresh else "",
                current_revision=str(st.get("currentRevision", "")),
                ready_replicas=int(st.get("readyReplicas", 0)),
            )
        pods: dict[int, PodView] = {}
        zones: dict[str, str] = {}
        for pod in self.kube.list("Pod", cluster.namespace, cluster.selector):
            meta = pod["metadata"]
            ordinal = cluster.ordinal(meta["name"])
            if ordinal is None:
                continue
            node_name = (pod.get("spec") or {}).get("nodeName") or ""
            pods[ordinal] = PodView(
                ordinal,
                _pod_ready(pod),
                revision=(meta.get("labels") or {}).get("controller-revision-hash", ""),
                terminating=bool(meta.get("deletionTimestamp")),
                zone=self._zone(node_name, cluster.spec.zone_key, zones),
            )
        assert self.resolver is not None
        urls = urls_for(cluster, self.resolver, sorted(pods))
        reports, rings = self._probe(token).probe(urls)
        rebalance = previous.get("rebalance") or {}
        return Observed(
            cluster=cluster,
            image=image,
            sts=sts,
            pods=pods,
            nodes=reports,
            rings=rings,
            now=self.clock(),
            committed_at=parse_time(rebalance.get("completedAt")),
            phase=str(previous.get("phase", "")),
            phase_since=parse_time(previous.get("phaseSince")),
        )

    def _zone(self, node_name: str, key: str, cache: dict[str, str]) -> str:
        if not node_name:
            return ""
        if node_name not in cache:
            try:
                node = self.kube.read("Node", None, node_name) or {}
            except ApiException:  # no RBAC for nodes: zones stay unknown
                node = {}
            cache[node_name] = str(((node.get("metadata") or {}).get("labels") or {}).get(key, ""))
        return cache[node_name]

    def _probe(self, token: str) -> NodeProbe:
        with self._lock:
            probe = self._probes.get(token)
            if probe is None:
                probe = self._probes[token] = NodeProbe(token, timeout=self.config.node_timeout_s)
            return probe

    # -- owned objects -------------------------------------------------------------

    def _token(self, cluster: Cluster) -> str:
        """The cluster token, creating `<name>-auth` when the spec names no Secret."""
        name = cluster.secret
        live = self.kube.read("Secret", cluster.namespace, name)
        if cluster.spec.auth_secret is None:
            owned = ownership(live, cluster.uid)
            if owned == Ownership.FOREIGN:
                raise BlockedError(f"Secret {name} exists and is not owned by this KVCluster")
            if owned == Ownership.ABSENT:
                if self.kube.read("StatefulSet", cluster.namespace, cluster.statefulset):
                    # Its pods run with the old token: a new one would split the cluster.
                    raise BlockedError(
                        f"Secret {name} is gone but the pods use the token it held: recreate "
                        f"it with that token (key `token`), or delete StatefulSet "
                        f"{cluster.statefulset} to start every pod with a new one"
                    )
                live = self.kube.create(builders.auth_secret(cluster, secrets.token_urlsafe(32)))
                log.info("%s/%s: created Secret %s", cluster.namespace, cluster.name, name)
            else:
                self._apply(cluster, builders.auth_secret(cluster, ""), live)
        if live is None:
            raise BlockedError(f"waiting for Secret {name} (spec.auth.secretName)", phase="Pending")
        data = live.get("data") or {}
        if "token" not in data:
            raise BlockedError(f"Secret {name} has no key `token`", phase="Pending")
        return base64.b64decode(data["token"]).decode().strip()

    def _apply(
        self,
        cluster: Cluster,
        desired: Mapping[str, Any],
        live: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Create or patch one owned object; return immutable fields that drifted."""
        kind, name = desired["kind"], desired["metadata"]["name"]
        if live is None:
            live = self.kube.read(kind, cluster.namespace, name)
        owned = ownership(live, cluster.uid)
        if owned == Ownership.FOREIGN:
            raise BlockedError(f"{kind} {name} exists and is not owned by this KVCluster")
        if owned == Ownership.ABSENT or live is None:
            self.kube.create(desired)
            log.info("%s/%s: created %s %s", cluster.namespace, cluster.name, kind, name)
            return []
        patch = diff(desired, live)
        if patch:
            self.kube.patch(kind, cluster.namespace, name, patch)
            log.info(
                "%s/%s: patched %s %s: %s",
                cluster.namespace,
                cluster.name,
                kind,
                name,
                ", ".join(sorted(_paths(patch))),
            )
        return immutable_drift(desired, live)

    def _apply_pdb(self, cluster: Cluster) -> None:
        desired = builders.pdb(cluster)
        if cluster.spec.pdb_enabled:
            self._apply(cluster, desired)
            return
        live = self.kube.read("PodDisruptionBudget", cluster.namespace, cluster.pdb)
        if ownership(live, cluster.uid) == Ownership.OURS:
            self.kube.delete("PodDisruptionBudget", cluster.namespace, cluster.pdb)

    def _apply_network_policy(self, cluster: Cluster) -> None:
        if self.config.network_policy:
            desired = builders.network_policy(
                cluster, self.config.namespace, self.config.network_policy_from
            )
            self._apply(cluster, desired)
            return
        live = self.kube.read("NetworkPolicy", cluster.namespace, cluster.name)
        if ownership(live, cluster.uid) == Ownership.OURS:
            self.kube.delete("NetworkPolicy", cluster.namespace, cluster.name)

    def _expand_volumes(self, cluster: Cluster) -> tuple[str, str, str] | None:
        """Grow claims below spec.storage.size where their StorageClass allows it."""
        want = parse_quantity(cluster.spec.storage_size)
        grown, refused = [], []
        for pvc in self.kube.list("PersistentVolumeClaim", cluster.namespace, cluster.selector):
            spec = pvc.get("spec") or {}
            have = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "0")
            if parse_quantity(have) >= want:
                continue
            name = pvc["metadata"]["name"]
            sc_name = spec.get("storageClassName")
            try:
                sc = self.kube.read("StorageClass", None, sc_name) if sc_name else None
            except ApiException:  # not allowed to read it: it may not allow expansion
                sc = None
            if sc is None or not sc.get("allowVolumeExpansion"):
                why = f"StorageClass {sc_name} does not allow volume expansion"
                refused.append(f"{name} ({why if sc_name else 'no StorageClass'})")
                continue
            try:
                self.kube.patch(
                    "PersistentVolumeClaim",
                    cluster.namespace,
                    name,
                    {"spec": {"resources": {"requests": {"storage": cluster.spec.storage_size}}}},
                )
            except ApiException as exc:  # e.g. a claim not bound yet: the server refuses
                refused.append(f"{name} ({_api_reason(exc)})")
                continue
            grown.append(name)
        if refused:
            return (
                "False",
                "ExpansionRefused",
                f"cannot grow to {cluster.spec.storage_size}: " + "; ".join(refused),
            )
        if grown:
            return (
                "True",
                "Expanding",
                f"growing {', '.join(grown)} to {cluster.spec.storage_size}",
            )
        return None

    # -- node actions ----------------------------------------------------------------

    def _act(self, cluster: Cluster, decision: Decision, token: str) -> list[str]:
        assert self.resolver is not None
        probe = self._probe(token)
        if decision.action == "abort":
            errors = []
            for pod, epoch in decision.abort_epochs.items():
                ordinal = cluster.ordinal(pod)
                url = self.resolver.url(cluster, ordinal) if ordinal is not None else ""
                try:
                    probe.rebalancer.abort(url, epoch)
                    log.info(
                        "%s/%s: aborted ring %d on %s", cluster.namespace, cluster.name, epoch, pod
                    )
                except Exception as exc:
                    errors.append(f"{pod}: {exc}")
            return errors
        if decision.action != "rebalance" or decision.step is None or decision.target is None:
            return []
        step = decision.step
        self.metrics.rebalance_steps.labels(step.action).inc()
        if step.action in ("join", "stream", "commit"):
            log.info(
                "%s/%s: ring epoch %d: %s on %s",
                cluster.namespace,
                cluster.name,
                decision.target.epoch,
                step.action,
                ", ".join(step.nodes),
            )
        ordinals = [o for o in (cluster.ordinal(n) for n in step.nodes) if o is not None]
        urls = urls_for(cluster, self.resolver, ordinals)
        return probe.rebalancer.act(step, decision.target, urls)

    # -- status ----------------------------------------------------------------------

    def _note_commit(self, previous: Mapping[str, Any], doc: Mapping[str, Any]) -> None:
        before = previous.get("rebalance") or {}
        after = doc.get("rebalance") or {}
        if after.get("completedAt") and not before.get("completedAt"):
            start, end = parse_time(after.get("startedAt")), parse_time(after["completedAt"])
            if start is not None and end is not None:
                self.metrics.rebalance_seconds.observe(max(0.0, end - start))

    def _paused(self, previous: Mapping[str, Any], generation: int) -> dict[str, Any]:
        now = self.clock()
        doc = dict(previous)
        if previous.get("phase") != "Paused":
            doc["phaseSince"] = iso(now)
        doc.update(
            phase="Paused",
            message="spec.paused is true: not reconciled",
            observedGeneration=generation,
            conditions=conditions(
                previous.get("conditions") or [],
                {
                    "Progressing": ("False", "Paused", "spec.paused is true: not reconciled"),
                    "Ready": ("Unknown", "Paused", "spec.paused is true: not reconciled"),
                },
                now,
                generation,
            ),
        )
        return doc

    def _write_status(
        self, body: Mapping[str, Any], previous: Mapping[str, Any], doc: Mapping[str, Any]
    ) -> None:
        if dict(doc) == dict(previous):
            return
        meta = body["metadata"]
        self.kube.patch_cluster_status(meta["namespace"], meta["name"], status_patch(previous, doc))
        for ev in events(previous, doc):
            try:
                self.kube.event({**body, "kind": KIND}, ev.type, ev.reason, ev.message)
            except ApiException as exc:  # events are best effort
                log.warning("could not post event %s: %s", ev.reason, exc.reason)

    def _count_phases(self) -> None:
        counts: dict[str, int] = {}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase in (
            "Pending",
            "Restoring",
            "Ready",
            "Scaling",
            "Rebalancing",
            "Upgrading",
            "Degraded",
            "Paused",
            "Failed",
        ):
            self.metrics.clusters.labels(phase).set(counts.get(phase, 0))

    def close(self) -> None:
        for probe in self._probes.values():
            probe.close()


def _api_reason(exc: ApiException) -> str:
    """The API server's one-line message from an error answer."""
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


def _paths(patch: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in patch.items():
        here = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping) and value and here.count(".") < 2:
            out.extend(_paths(value, here))
        else:
            out.append(here)
    return out
