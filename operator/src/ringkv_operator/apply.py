"""Applying carefully: compare a desired object with the living one, patch only a real difference.

The model is CloudNativePG's `serviceReconciler`: read the living object;
if it is not ours (no controller reference to this KVCluster), never touch
it; else compute what differs in the fields we set, ignoring everything the
server or others added (defaults, status, other people's labels and
annotations), and send a JSON merge patch of just that. `diff` is that
decision as a pure function; the reconciler sends what it returns.

A desired object is read as a pattern: a field it names must have that value
in the living object; a field it leaves out is someone else's. Lists are
compared item by item (same length; each desired item a pattern of the
living one), since the server fills defaults into list items (a container's
`terminationMessagePath`, a port's `protocol`) that we do not name.
Pure: no kopf, no kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Ownership", "diff", "matches", "ownership"]

# Fields a patch may not carry because the server refuses changes to them; a
# difference there is reported instead (the StatefulSet's claim templates,
# selector and service name are immutable).
IMMUTABLE: dict[str, tuple[tuple[str, ...], ...]] = {
    "StatefulSet": (
        ("spec", "volumeClaimTemplates"),
        ("spec", "selector"),
        ("spec", "serviceName"),
        ("spec", "podManagementPolicy"),
    ),
    "Service": (("spec", "clusterIP"),),
    "PodDisruptionBudget": (),
    # A Secret we generated keeps its token for good: rotating it means new
    # pods and a restart of every client, which is the user's call.
    "Secret": (("stringData",), ("data",)),
}


# Subtrees we own whole: a difference there replaces the living subtree (the
# patch sets keys we do not name to null, and the server fills its defaults
# in again), so that a field removed from the spec also goes from the object.
REPLACE: dict[str, tuple[tuple[str, ...], ...]] = {
    "StatefulSet": (("spec", "template", "spec"),),
    "PodDisruptionBudget": (("spec",),),
    "NetworkPolicy": (("spec",),),
}
# Maps the server fills nothing into, compared key for key: an extra key is a
# difference (a Service's selector widened by hand selects other pods).
EXACT: dict[str, tuple[tuple[str, ...], ...]] = {
    "Service": (("spec", "selector"),),
}


class Ownership:
    OURS = "ours"
    ABSENT = "absent"
    FOREIGN = "foreign"


def ownership(live: Mapping[str, Any] | None, owner_uid: str) -> str:
    """`ours` (our controller reference), `absent`, or `foreign`: leave it alone."""
    if live is None:
        return Ownership.ABSENT
    for ref in (live.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("uid") == owner_uid and ref.get("controller"):
            return Ownership.OURS
    return Ownership.FOREIGN


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def matches(want: Any, have: Any) -> bool:
    """`have` (living) agrees with the pattern `want` (desired)."""
    if isinstance(want, Mapping):
        if not want:
            return _empty(have)
        if not isinstance(have, Mapping):
            return all(_empty(v) for v in want.values()) and _empty(have)
        return all(matches(v, have.get(k)) for k, v in want.items())
    if isinstance(want, Sequence) and not isinstance(want, str):
        if _empty(want):
            return _empty(have)
        if not isinstance(have, Sequence) or isinstance(have, str) or len(have) != len(want):
            return False
        return all(matches(w, h) for w, h in zip(want, have, strict=True))
    if _empty(want):
        return _empty(have)
    return bool(want == have)


def _without(doc: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """A copy of `doc` without the fields at `paths`."""
    out = dict(doc)
    for path in paths:
        node = out
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, Mapping):
                break
            node[key] = dict(child)
            node = node[key]
        else:
            node.pop(path[-1], None)
    return out


def _replace(want: Mapping[str, Any], have: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that makes the map `have` exactly `want` (extra keys set to null)."""
    out: dict[str, Any] = {key: None for key in have if key not in want}
    for key, value in want.items():
        current = have.get(key)
        if isinstance(value, Mapping) and value and isinstance(current, Mapping):
            out[key] = _replace(value, current)
        else:
            out[key] = value
    return out


def _patch(
    want: Mapping[str, Any],
    have: Mapping[str, Any],
    replace: tuple[tuple[str, ...], ...] = (),
    path: tuple[str, ...] = (),
    exact: tuple[tuple[str, ...], ...] = (),
) -> dict[str, Any]:
    """A merge patch setting what differs: maps recurse, anything else is replaced whole."""
    out: dict[str, Any] = {}
    for key, value in want.items():
        current = have.get(key) if isinstance(have, Mapping) else None
        here = (*path, key)
        if here in exact:
            if value != current:
                out[key] = _replace(value, current or {}) if isinstance(value, Mapping) else value
            continue
        inside = any(e[: len(here)] == here for e in exact)
        if matches(value, current) and not inside:
            continue
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            if here in replace:
                out[key] = _replace(value, current)
            else:
                sub = _patch(value, current, replace, here, exact)
                if sub:
                    out[key] = sub
        else:
            out[key] = value
    return out


def diff(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that makes `live` agree with `desired`, or None when it does.

    Only `metadata.labels`, `metadata.annotations`, `metadata.ownerReferences`
    and the object's own sections (`spec`, a Secret's `type`...) are compared;
    labels and annotations are merged key by key, so those others added stay.
    """
    kind = str(desired.get("kind", ""))
    want = _without(desired, IMMUTABLE.get(kind, ()))
    patch: dict[str, Any] = {}
    meta_want = want.get("metadata") or {}
    meta_have = live.get("metadata") or {}
    meta_patch = {}
    for field in ("labels", "annotations"):
        if field in meta_want:
            changed = _patch(meta_want[field], meta_have.get(field) or {})
            if changed:
                meta_patch[field] = changed
    if "ownerReferences" in meta_want and not matches(
        meta_want["ownerReferences"], meta_have.get("ownerReferences")
    ):
        meta_patch["ownerReferences"] = meta_want["ownerReferences"]
    if meta_patch:
        patch["metadata"] = meta_patch
    body = {k: v for k, v in want.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    patch.update(_patch(body, live, REPLACE.get(kind, ()), (), EXACT.get(kind, ())))
    return patch or None


def immutable_drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Immutable fields where `live` no longer agrees with `desired` (reported, not patched)."""
    drift = []
    for path in IMMUTABLE.get(str(desired.get("kind", "")), ()):
        want: Any = desired
        have: Any = live
        for key in path:
            want = want.get(key) if isinstance(want, Mapping) else None
            have = have.get(key) if isinstance(have, Mapping) else None
        if want is not None and not matches(want, have):
            drift.append(".".join(path))
    return drift
