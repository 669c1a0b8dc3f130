"""Where backups live: a directory, or S3-compatible object storage.

    store = open_store("/backups")                    # a directory (a PVC under Kubernetes)
    store = open_store("s3://bucket/some/prefix", S3Options(endpoint_url=...))

A store holds backups side by side, each under its id: `<root>/<id>/manifest.json`
and its parts (`ringkv.backupformat`). Writes are whole objects: a
directory's file is written to a temporary name, fsync'd and renamed, so a
reader never sees half a file; an S3 object above `multipart_threshold` is
sent as a multipart upload (boto3's transfer manager, parts of
`multipart_chunk` bytes, a few at once). The manifest is written last and
deleted first, so a backup without one is incomplete and never listed.

S3 settings come from `S3Options`, which the CLI fills from flags and the
environment: `RINGKV_S3_ENDPOINT` (or boto3's own `AWS_ENDPOINT_URL`),
`RINGKV_S3_REGION` (or `AWS_REGION` / `AWS_DEFAULT_REGION`),
`RINGKV_S3_PATH_STYLE`, and credentials the way boto3 finds them
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, a
profile, or an instance role). boto3 is needed only for S3 (`pip install
ringkv[s3]`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Protocol

from ringkv.backupformat import MANIFEST, check_backup_id
from ringkv.errors import BackupNotFoundError, DestinationError

__all__ = [
    "BackupNotFoundError",
    "DestinationError",
    "DirStore",
    "S3Options",
    "S3Store",
    "Store",
    "open_store",
]


class Store(Protocol):
    location: str  # how to name it again: a path or s3://bucket/prefix

    def put(self, name: str, data: bytes) -> None:
        """Write object `name` (`<id>/manifest.json`, `<id>/part-00000.zst`) whole."""

    def get(self, name: str) -> bytes:
        """Object `name`; BackupNotFoundError when there is none."""

    def backup_ids(self) -> list[str]:
        """Ids of the backups that have a manifest, sorted."""

    def names(self, backup_id: str) -> list[str]:
        """Every object of one backup (complete or not)."""

    def delete(self, names: list[str]) -> None:
        """Delete these objects (missing ones are no error)."""


class DirStore:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.location = self.root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise DestinationError(f"cannot write {path}: {exc.strerror or exc}") from None

    def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise BackupNotFoundError(f"{path} does not exist") from None
        except OSError as exc:
            raise DestinationError(f"cannot read {path}: {exc.strerror or exc}") from None

    def backup_ids(self) -> list[str]:
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:  # a mistyped destination listed (and pruned) nothing, quietly
            raise DestinationError(f"{self.root} does not exist") from None
        except OSError as exc:
            raise DestinationError(f"cannot list {self.root}: {exc.strerror or exc}") from None
        return [e for e in entries if os.path.isfile(os.path.join(self.root, e, MANIFEST))]

    def names(self, backup_id: str) -> list[str]:
        folder = os.path.join(self.root, backup_id)
        try:
            return sorted(f"{backup_id}/{n}" for n in os.listdir(folder))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DestinationError(f"cannot list {folder}: {exc.strerror or exc}") from None

    def delete(self, names: list[str]) -> None:
        folders = set()
        for name in names:
            path = self._path(name)
            folders.add(os.path.dirname(path))
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise DestinationError(f"cannot delete {path}: {exc.strerror or exc}") from None
        for folder in folders:
            if folder != self.root and os.path.isdir(folder) and not os.listdir(folder):
                shutil.rmtree(folder, ignore_errors=True)


S3_TIMEOUT_S = 60.0  # to connect, and for each answer (botocore's default)


@dataclass(frozen=True, slots=True)
class S3Options:
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    multipart_threshold: int = 16 << 20
    multipart_chunk: int = 16 << 20
    timeout_s: float = S3_TIMEOUT_S

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **given: Any) -> S3Options:
        """Flags given (None: not given) over `RINGKV_S3_*`, then boto3's own variables."""
        e = os.environ if env is None else env
        endpoint = given.get("endpoint_url") or e.get("RINGKV_S3_ENDPOINT") or None
        region = (
            given.get("region")
            or e.get("RINGKV_S3_REGION")
            or e.get("AWS_REGION")
            or e.get("AWS_DEFAULT_REGION")
            or None
        )
        path_style = given.get("path_style")
        if path_style is None:
            path_style = e.get("RINGKV_S3_PATH_STYLE", "").lower() in ("1", "true", "yes", "on")
        timeout = given.get("timeout_s")
        return cls(endpoint, region, bool(path_style), timeout_s=timeout or S3_TIMEOUT_S)


def split_s3(location: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"). Pure."""
    rest = location[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{location!r}: name a bucket, as s3://bucket/prefix")
    return bucket, prefix.strip("/")


class S3Store:
    def __init__(self, location: str, options: S3Options) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError:
            raise ValueError(
                "S3 destinations need boto3: pip install 'ringkv[s3]' (or boto3)"
            ) from None
        self.bucket, self.prefix = split_s3(location)
        self.location = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        config = Config(
            s3={"addressing_style": "path" if options.path_style else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=options.timeout_s,
            read_timeout=options.timeout_s,
        )
        self._s3 = boto3.client(
            "s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config
        )
        self._transfer = TransferConfig(
            multipart_threshold=options.multipart_threshold,
            multipart_chunksize=options.multipart_chunk,
            max_concurrency=4,
        )

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, what: str, exc: Exception) -> DestinationError:
        return DestinationError(f"{what} {self.location}: {exc}")

    def put(self, name: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._s3.upload_fileobj(
                io.BytesIO(data), self.bucket, self._key(name), Config=self._transfer
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(f"cannot write {name} to", exc) from None

    def get(self, name: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=self._key(name))
            return bytes(answer["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BackupNotFoundError(f"{self.location}/{name} does not exist") from None
            raise self._error(f"cannot read {name} from", exc) from None
        except BotoCoreError as exc:
            raise self._error(f"cannot read {name} from", exc) from None

    def _list(self, prefix: str, delimiter: str | None) -> tuple[list[str], list[str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys: list[str] = []
        folders: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(**kwargs):
                keys += [o["Key"] for o in page.get("Contents", [])]
                folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        except (BotoCoreError, ClientError) as exc:
            raise self._error("cannot list", exc) from None
        return keys, folders

    def backup_ids(self) -> list[str]:
        base = self._key("")
        _, folders = self._list(base, "/")
        ids = []
        for folder in folders:
            backup_id = folder[len(base) :].rstrip("/")
            keys, _ = self._list(f"{folder}{MANIFEST}", None)
            if f"{folder}{MANIFEST}" in keys:
                ids.append(backup_id)
        return sorted(ids)

    def names(self, backup_id: str) -> list[str]:
        base = self._key("")
        keys, _ = self._list(self._key(f"{backup_id}/"), None)
        return sorted(k[len(base) :] for k in keys)

    def delete(self, names: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            try:
                self._s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._key(n)} for n in chunk], "Quiet": True},
                )
            except (BotoCoreError, ClientError) as exc:
                raise self._error("cannot delete from", exc) from None


def open_store(location: str, s3: S3Options | None = None) -> Store:
    """The store at `location`: `s3://bucket/prefix`, or a directory path."""
    if not location:
        raise ValueError("give a backup destination: a directory or s3://bucket/prefix")
    if location.startswith("s3://"):
        return S3Store(location, s3 or S3Options.from_env())
    if "://" in location:
        raise ValueError(f"{location!r}: a destination is a directory or s3://bucket/prefix")
    return DirStore(location)


def split_location(location: str) -> tuple[str, str | None]:
    """A location that may name one backup (`.../<id>`): (its store's location,
    the id), judged by whether the location itself holds a manifest; the
    caller checks that. Pure: the last path segment, if it is a valid id."""
    trimmed = location.rstrip("/")
    parent, _, last = trimmed.rpartition("/")
    try:
        check_backup_id(last)
    except ValueError:
        return location, None
    if not parent or parent in ("s3:", "s3:/"):
        return location, None
    return parent, last
