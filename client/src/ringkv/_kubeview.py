"""What `kubectl ringkv` decides and shows, from the objects it reads: pure, dicts in, text out.

The shell (`ringkv.kubectl`) reads a KVCluster, a Secret and a kubeconfig,
and runs `kubectl port-forward`; everything it prints or decides from them
is here, with no kubernetes client and no clock of its own (`now` is
passed in), so that its tests need neither an API server nor a kubectl.

The names of the KVCluster API are the operator's (`ringkv_operator.model`),
written again here because the client package never imports the operator
(import-linter); the tier-3 tests read real objects through them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ringkv.exits import BAD_INPUT, CLUSTER_ERROR, NOT_FOUND

__all__ = [
    "BACKUP_PLURAL",
    "GROUP",
    "NODE_PORT",
    "PLURAL",
    "VERSION",
    "api_error",
    "backup_destination",
    "backup_line",
    "backup_name",
    "backup_object",
    "connect_lines",
    "format_status",
    "forward_failed",
    "forwarded_port",
    "human_age",
    "human_bytes",
    "pick_context",
    "port_forward_argv",
    "problems",
    "token_secret",
    "valid_name",
]

GROUP, VERSION, PLURAL = "ringkv.io", "v1alpha1", "kvclusters"
BACKUP_PLURAL = "kvbackups"
NODE_PORT = 8080  # the client Service's port

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def valid_name(text: str) -> bool:
    """A DNS-1123 label: what namespaces and KVCluster names must be."""
    return len(text) <= 63 and _LABEL.fullmatch(text) is not None


# -- units --------------------------------------------------------------------


def human_bytes(n: object) -> str:
    """1536 -> "1.5 KiB": binary units, as `kubectl` shows quantities like 1Gi."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return "-"
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024 or unit == "PiB":
            break
    return f"{size:.1f} {unit}"


def human_age(seconds: float) -> str:
    """A duration as kubectl's AGE column writes it (apimachinery's HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = divmod(hours // 24, 365)
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def _parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _age(text: object, now: float) -> str:
    ts = _parse_time(text)
    return "-" if ts is None else human_age(now - ts)


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns two spaces apart, as kubectl prints them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)]
        lines.append((indent + "  ".join([*cells, row[-1]])).rstrip())
    return lines


# -- status -------------------------------------------------------------------


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: object) -> str:
    n = _int(value)
    return "-" if n is None else str(n)


def _rebalance_line(rb: Mapping[str, Any], now: float) -> str:
    state = str(rb.get("state") or "?")
    text = (
        f"{state}: epoch {_num(rb.get('fromEpoch'))} -> {_num(rb.get('toEpoch'))}, "
        f"{_num(rb.get('fromMembers'))} -> {_num(rb.get('toMembers'))} members"
    )
    moved, total = _int(rb.get("partitionsMoved")), _int(rb.get("partitionsTotal"))
    if state in ("Done", "Draining") and rb.get("completedAt"):
        text += f", committed {_age(rb.get('completedAt'), now)} ago"
        if state == "Draining":
            text += "; removed pods drop their data"
        return text
    if total:
        text += f", {moved or 0}/{total} partition copies streamed ({100 * (moved or 0) // total}%)"
    if rb.get("startedAt"):
        text += f", started {_age(rb.get('startedAt'), now)} ago"
    return text


def _pod_rows(nodes: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    notes = any(n.get("unreachable") for n in nodes)
    head = ["POD", "READY", "ZONE", "EPOCH", "PARTITIONS", "HINTS", "OUT-OF-SYNC", "USED"]
    rows = [head + (["NOTE"] if notes else [])]
    for n in nodes:
        row = [str(n.get("pod", "?")), "yes" if n.get("ready") else "no", str(n.get("zone") or "-")]
        if n.get("unreachable"):
            row += ["-"] * 5
        else:
            row += [
                _num(n.get("epoch")),
                _num(n.get("partitions")),
                _num(n.get("hintBacklog")),
                _num(n.get("partitionsOutOfSync")),
                human_bytes(n.get("usedBytes")),
            ]
        if notes:
            row.append("unreachable: its node did not answer" if n.get("unreachable") else "")
        rows.append(row)
    return rows


def format_status(obj: Mapping[str, Any], now: float) -> str:
    """`kubectl ringkv status NAME`: the KVCluster's status for people."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    field: list[tuple[str, str]] = [
        ("Name", str(meta.get("name", "?"))),
        ("Namespace", str(meta.get("namespace", "?"))),
    ]
    if not st:
        field.append(
            (
                "Phase",
                "(no status yet: the operator has not reconciled it; is it running? "
                "kubectl -n ringkv-system get deploy ringkv-operator)",
            )
        )
        return "\n".join(f"{k + ':':<13}{v}" for k, v in field) + "\n"

    since = f" for {_age(st['phaseSince'], now)}" if st.get("phaseSince") else ""
    field.append(("Phase", f"{st.get('phase', '?')}{since}"))
    if st.get("message"):
        field.append(("Message", str(st["message"])))
    want = _int(spec.get("replicas"))
    field.append(
        (
            "Replicas",
            f"{_num(st.get('readyReplicas'))} of {_num(st.get('replicas'))} ready"
            + (f" (spec.replicas {want})" if want is not None else ""),
        )
    )
    if st.get("ringEpoch") is not None:
        ring = f"epoch {_num(st.get('ringEpoch'))}"
        if st.get("members") is not None:
            ring += f", {_num(st.get('members'))} members"
        if spec.get("partitions") is not None:
            ring += f", {_num(spec.get('partitions'))} partitions"
        if spec.get("replicationFactor") is not None:
            ring += f", N={_num(spec.get('replicationFactor'))}"
        field.append(("Ring", ring))
    if st.get("rebalance"):
        field.append(("Rebalance", _rebalance_line(st["rebalance"], now)))
    conv = st.get("convergence")
    if conv:
        text = (
            f"hint backlog {_num(conv.get('hintBacklog'))}, "
            f"partitions out of sync {_num(conv.get('partitionsOutOfSync'))}"
        )
        if conv.get("lastAntiEntropy"):
            text += f", last anti-entropy {_age(conv['lastAntiEntropy'], now)} ago"
        field.append(("Convergence", text))
    if st.get("image"):
        field.append(("Image", str(st["image"])))
    up = st.get("upgrade") or {}
    pods = _int(st.get("replicas"))
    if up.get("revision") and pods is not None and _int(up.get("updated")) != pods:
        field.append(
            (
                "Upgrade",
                f"{_num(up.get('updated'))} of {pods} pods at revision {up['revision']} "
                f"(partition {_num(up.get('partition'))})",
            )
        )
    last = st.get("lastBackup") or {}
    field.append(
        (
            "Last backup",
            f"{last.get('name')}, {_age(last.get('completedAt'), now)} ago"
            if last.get("name")
            else "none",
        )
    )
    seen, gen = _int(st.get("observedGeneration")), _int(meta.get("generation"))
    if seen is not None and gen is not None and seen < gen:
        field.append(
            ("Note", f"this status is of generation {seen}, the spec is at {gen}: not caught up")
        )
    lines = [f"{k + ':':<13}{v}" for k, v in field]

    conds = st.get("conditions") or []
    if conds:
        rows = [["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]]
        for c in conds:
            rows.append(
                [
                    str(c.get("type", "?")),
                    str(c.get("status", "?")),
                    str(c.get("reason") or "-"),
                    _age(c.get("lastTransitionTime"), now),
                    str(c.get("message") or ""),
                ]
            )
        lines += ["", "Conditions:", *_table(rows)]
    nodes = st.get("nodes") or []
    if nodes:
        lines += ["", "Pods:", *_table(_pod_rows(nodes))]
    return "\n".join(lines) + "\n"


def problems(obj: Mapping[str, Any]) -> list[str]:
    """Why the cluster is not healthy (empty: it is): `status` then exits 3, as
    `ringkv status` does when a member is down or not ready."""
    st = obj.get("status") or {}
    if not st:
        return ["no status yet (is the operator running?)"]
    out = []
    if st.get("phase") in ("Degraded", "Failed"):
        out.append(f"phase {st['phase']}")
    for n in st.get("nodes") or []:
        if n.get("unreachable"):
            out.append(f"{n.get('pod')} unreachable")
        elif not n.get("ready"):
            out.append(f"{n.get('pod')} not ready")
    return out


# -- kubeconfig ---------------------------------------------------------------


def pick_context(docs: Sequence[Mapping[str, Any]], context: str | None) -> tuple[str, str | None]:
    """(context name, its namespace) from the kubeconfig files of $KUBECONFIG, in order.

    kubectl's merge rules: the first file that sets `current-context` wins, and
    the first context of a name wins. Raises ValueError naming what is missing.
    """
    name = context
    if name is None:
        name = next((str(d["current-context"]) for d in docs if d.get("current-context")), None)
        if name is None:
            raise ValueError("the kubeconfig has no current context: give --context")
    for doc in docs:
        for item in doc.get("contexts") or []:
            if item.get("name") == name:
                namespace = (item.get("context") or {}).get("namespace")
                return name, str(namespace) if namespace else None
    raise ValueError(f"context {name!r} is not in the kubeconfig")


# -- errors from the API server ---------------------------------------------------


def api_error(status: int | None, reason: str | None, body: object) -> tuple[str, int]:
    """One line and an exit code for an API server error answer."""
    message = ""
    if isinstance(body, bytes | str) and body:
        try:
            doc = json.loads(body)
            message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
        except ValueError:
            message = (body.decode(errors="replace") if isinstance(body, bytes) else body)[:200]
    text = message or reason or "no reason given"
    text = " ".join(text.split())
    if status == 404:
        return f"not found: {text}", NOT_FOUND
    if status in (400, 401, 403, 409, 422):  # the request, a name taken, the credentials
        return f"the API server refused the request ({status}): {text}", BAD_INPUT
    return f"the API server answered {status}: {text}", CLUSTER_ERROR


# -- connect ------------------------------------------------------------------


def token_secret(obj: Mapping[str, Any]) -> str:
    """The Secret holding the cluster token: spec.auth.secretName, else <name>-auth."""
    auth = (obj.get("spec") or {}).get("auth") or {}
    return str(auth.get("secretName") or f"{obj['metadata']['name']}-auth")


def port_forward_argv(
    kubectl: str,
    name: str,
    namespace: str,
    port: int | None,
    *,
    context: str | None = None,
    kubeconfig: str | None = None,
) -> list[str]:
    """`kubectl port-forward svc/NAME PORT:8080` on 127.0.0.1 (port None: kubectl picks one)."""
    argv = [kubectl, "port-forward", f"svc/{name}", f"{port or ''}:{NODE_PORT}"]
    argv += ["--address", "127.0.0.1", "-n", namespace]
    if context:
        argv += ["--context", context]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    return argv


_FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> \d+")


def forwarded_port(line: str) -> int | None:
    """The local port in kubectl's `Forwarding from 127.0.0.1:PORT -> 8080` line."""
    found = _FORWARDING.match(line.strip())
    return int(found.group(1)) if found else None


def connect_lines(port: int, token: str) -> list[str]:
    """The shell lines `connect` prints for the `ringkv` CLI."""
    return [
        f"export RINGKV_URL=http://127.0.0.1:{port}",
        f"export RINGKV_TOKEN={shlex.quote(token)}",
        "export RINGKV_DIRECT=0",
    ]


def forward_failed(code: int | None, stderr: Sequence[str]) -> str:
    """One line for a port-forward that ended: kubectl's own last error line."""
    said = [line.strip() for line in stderr if line.strip()]
    errors = [line for line in said if line.lower().startswith(("error", "unable"))]
    why = (errors or said or ["no message"])[-1]
    return f"kubectl port-forward exited ({code}): {why}"


# -- kubectl ringkv backup ---------------------------------------------------------


def backup_name(cluster: str, now: float) -> str:
    """`<cluster>-<UTC time>`: the default name of a KVBackup made by hand."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    return f"{cluster[:45]}-{stamp}"


def backup_destination(
    obj: Mapping[str, Any],
    *,
    pvc: str | None = None,
    s3: str | None = None,
    s3_endpoint: str | None = None,
    s3_region: str | None = None,
    s3_secret: str | None = None,
    s3_path_style: bool = False,
) -> dict[str, Any]:
    """The KVBackup's destination: `--pvc` or `--s3` when given, else the
    cluster's spec.backup.destination. ValueError says what to give."""
    if pvc and s3:
        raise ValueError("give --pvc or --s3, not both")
    if pvc:
        return {"pvc": {"claimName": pvc}}
    if s3:
        if not s3.startswith("s3://") or not s3[len("s3://") :].split("/", 1)[0]:
            raise ValueError(f"--s3 must be s3://bucket[/prefix], not {s3!r}")
        bucket, _, prefix = s3[len("s3://") :].partition("/")
        doc: dict[str, Any] = {"bucket": bucket, "prefix": prefix.strip("/")}
        for key, value in (
            ("endpoint", s3_endpoint),
            ("region", s3_region),
            ("secretName", s3_secret),
        ):
            if value:
                doc[key] = value
        if s3_path_style:
            doc["pathStyle"] = True
        return {"s3": doc}
    dest = ((obj.get("spec") or {}).get("backup") or {}).get("destination")
    if not dest:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise ValueError(
            f"kvcluster {name} has no spec.backup.destination: give --pvc CLAIM or "
            "--s3 s3://bucket/prefix"
        )
    return dict(dest)


def backup_object(
    cluster: str, name: str, destination: Mapping[str, Any], verify: str
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "KVBackup",
        "metadata": {"name": name},
        "spec": {"cluster": cluster, "destination": dict(destination), "verify": verify},
    }


def backup_line(name: str, status: Mapping[str, Any], elapsed: float) -> str:
    """One progress line of a KVBackup being followed."""
    phase = str(status.get("phase") or "Pending")
    parts = [f"kvbackup/{name}: {phase}", f"{elapsed:.0f}s"]
    if phase == "Completed":
        keys = _int(status.get("keys"))
        parts.append(
            f"{'?' if keys is None else f'{keys:,}'} keys, "
            f"{human_bytes(status.get('sizeBytes'))}, at {status.get('location', '?')}"
        )
        if status.get("verified"):
            parts.append(str(status["verified"]))
    elif status.get("message"):
        parts.append(str(status["message"]))
    return " | ".join(parts)
