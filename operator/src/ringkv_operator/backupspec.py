"""Backups as the operator sees them: destinations, a KVCluster's `spec.backup`
and `spec.bootstrap`, and a KVBackup's spec. Pure: no kopf, no kubernetes.

A destination is a PersistentVolumeClaim or an S3 prefix. A backup's
location, as `KVBackup.status.location` reports it and as
`spec.bootstrap.fromBackup.location` takes it, is a URL:

    pvc://<claim>/<backup id>            the claim, mounted at /backup in the Job
    s3://<bucket>/<prefix>/<backup id>   (S3 settings beside it)

The backup id of a KVBackup is its name, so retention can delete a
KVBackup's data by name and a backup is found again from its object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ringkv.retention import Retention
from ringkv_operator.model import SpecError

__all__ = [
    "BACKUP_MOUNT",
    "S3",
    "BackupPolicy",
    "BackupSpec",
    "Bootstrap",
    "Destination",
    "job_name",
    "parse_backup",
    "parse_backup_policy",
    "parse_bootstrap",
    "parse_destination",
    "parse_location",
]

BACKUP_MOUNT = "/backup"


@dataclass(frozen=True, slots=True)
class S3:
    bucket: str
    prefix: str = ""
    endpoint: str = ""
    region: str = "us-east-1"
    path_style: bool = False
    secret: str | None = None  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY

    def url(self) -> str:
        prefix = self.prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where backups go: a claim (with a sub-path) or an S3 prefix."""

    claim: str | None = None
    path: str = ""  # inside the claim
    s3: S3 | None = None

    def cli_location(self) -> str:
        """The destination as the Job's `ringkv backup` sees it."""
        if self.s3 is not None:
            return self.s3.url()
        path = self.path.strip("/")
        return f"{BACKUP_MOUNT}/{path}" if path else BACKUP_MOUNT

    def location(self, backup_id: str) -> str:
        """A backup's location URL (see the module's docstring)."""
        if self.s3 is not None:
            return f"{self.s3.url()}/{backup_id}"
        path = self.path.strip("/")
        return f"pvc://{self.claim}/{path + '/' if path else ''}{backup_id}"


@dataclass(frozen=True, slots=True)
class BackupSpec:
    """A KVBackup's spec."""

    cluster: str
    destination: Destination
    verify: str = "none"  # or "restore": a restore drill after the backup


@dataclass(frozen=True, slots=True)
class BackupPolicy:
    """A KVCluster's `spec.backup`."""

    destination: Destination
    schedule: str | None = None
    suspend: bool = False
    retention: Retention | None = None
    verify: str = "none"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """`spec.bootstrap.fromBackup`: a KVBackup's name, or a location."""

    backup: str | None = None
    destination: Destination | None = None  # with `location`
    backup_id: str | None = None  # None: the newest at the destination


def _text(doc: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise SpecError(f"{path}.{key}: must be a string, not {value!r}")
    return value


def _s3(doc: Mapping[str, Any], path: str) -> S3:
    if not isinstance(doc, Mapping):
        raise SpecError(f"{path}: must be an object")
    bucket = _text(doc, "bucket", path)
    if not bucket:
        raise SpecError(f"{path}.bucket: name the bucket")
    return S3(
        bucket=bucket,
        prefix=_text(doc, "prefix", path).strip("/"),
        endpoint=_text(doc, "endpoint", path),
        region=_text(doc, "region", path, "us-east-1") or "us-east-1",
        path_style=bool(doc.get("pathStyle") or False),
        secret=_text(doc, "secretName", path) or None,
    )


def parse_destination(doc: Any, path: str) -> Destination:
    if not isinstance(doc, Mapping):
        raise SpecError(f"{path}: must be an object with pvc or s3")
    pvc, s3 = doc.get("pvc"), doc.get("s3")
    if (pvc is None) == (s3 is None):
        raise SpecError(f"{path}: name exactly one of pvc or s3")
    if s3 is not None:
        return Destination(s3=_s3(s3, f"{path}.s3"))
    if not isinstance(pvc, Mapping) or not pvc.get("claimName"):
        raise SpecError(f"{path}.pvc.claimName: name the PersistentVolumeClaim")
    return Destination(
        claim=str(pvc["claimName"]), path=_text(pvc, "path", f"{path}.pvc").strip("/")
    )


def parse_location(
    location: str, s3: Mapping[str, Any] | None, path: str
) -> tuple[Destination, str | None]:
    """`pvc://claim[/path]/id` or `s3://bucket[/prefix]/id` (with `s3` settings):
    the destination and the backup id (None when the location names only a
    destination: the newest backup there)."""
    if location.startswith("pvc://"):
        claim, _, rest = location[len("pvc://") :].partition("/")
        if not claim:
            raise SpecError(f"{path}.location: pvc://<claim>/<backup id>, not {location!r}")
        parent, _, backup_id = rest.strip("/").rpartition("/")
        return Destination(claim=claim, path=parent), backup_id or None
    if location.startswith("s3://"):
        bucket, _, rest = location[len("s3://") :].partition("/")
        settings = dict(s3 or {})
        settings["bucket"] = bucket
        parent, _, backup_id = rest.strip("/").rpartition("/")
        settings["prefix"] = parent
        return Destination(s3=_s3(settings, f"{path}.s3")), backup_id or None
    raise SpecError(
        f"{path}.location: pvc://<claim>/<backup id> or s3://<bucket>/<prefix>/<backup id>, "
        f"not {location!r}"
    )


def parse_backup(body: Mapping[str, Any]) -> BackupSpec:
    spec = body.get("spec") or {}
    cluster = spec.get("cluster")
    if not isinstance(cluster, str) or not cluster:
        raise SpecError("spec.cluster: name the KVCluster to back up")
    verify = spec.get("verify") or "none"
    if verify not in ("none", "restore"):
        raise SpecError(f"spec.verify: none or restore, not {verify!r}")
    return BackupSpec(
        cluster, parse_destination(spec.get("destination"), "spec.destination"), verify
    )


def _retention(doc: Any) -> Retention | None:
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise SpecError("spec.backup.retention: must be an object")
    try:
        return Retention(
            int(doc.get("keepLast") or 0),
            int(doc.get("keepDaily") or 0),
            int(doc.get("keepWeekly") or 0),
            int(doc.get("keepMonthly") or 0),
        )
    except ValueError as exc:
        raise SpecError(f"spec.backup.retention: {exc}") from None


def parse_backup_policy(doc: Any) -> BackupPolicy | None:
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise SpecError("spec.backup: must be an object")
    schedule = doc.get("schedule") or None
    if schedule is not None:
        from croniter import croniter  # pure, but only needed here

        if not isinstance(schedule, str) or not croniter.is_valid(schedule):
            raise SpecError(f"spec.backup.schedule: not a cron expression: {schedule!r}")
    verify = doc.get("verify") or "none"
    if verify not in ("none", "restore"):
        raise SpecError(f"spec.backup.verify: none or restore, not {verify!r}")
    return BackupPolicy(
        destination=parse_destination(doc.get("destination"), "spec.backup.destination"),
        schedule=schedule,
        suspend=bool(doc.get("suspend") or False),
        retention=_retention(doc.get("retention")),
        verify=verify,
    )


def parse_bootstrap(doc: Any) -> Bootstrap | None:
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise SpecError("spec.bootstrap: must be an object")
    source = doc.get("fromBackup")
    if source is None:
        return None
    path = "spec.bootstrap.fromBackup"
    if not isinstance(source, Mapping):
        raise SpecError(f"{path}: must be an object with name or location")
    name, location = source.get("name"), source.get("location")
    if (name is None) == (location is None):
        raise SpecError(f"{path}: give exactly one of name or location")
    if name is not None:
        return Bootstrap(backup=str(name))
    destination, backup_id = parse_location(str(location), source.get("s3"), path)
    return Bootstrap(destination=destination, backup_id=backup_id)


def job_name(base: str, suffix: str = "") -> str:
    """A Job name (a label value for its pods, so at most 63 characters)."""
    name = f"{base}-{suffix}" if suffix else base
    if len(name) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:6]
    return f"{name[:56].rstrip('-')}-{digest}"
