"""`ringkv backup create / list / verify / delete / prune` and `ringkv restore`.

Built to run unattended too (a Kubernetes Job): the cluster from `--url`,
the token from `--token-file`, `RINGKV_TOKEN` or `RINGKV_TOKEN_FILE`, the
destination from `--to` / `--from` or `RINGKV_BACKUP_LOCATION`, S3 settings
from flags or `RINGKV_S3_*` / `AWS_*`; `--json` prints one summary document
on stdout; a progress bar (keys, bytes, rate) only when stderr is a
terminal. Exit codes as every command's (`ringkv.cli.EXIT_CODES`): 1 when the
backup is not there, 2 for bad input and a backup that does not verify, 3
for the cluster or the destination failing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from typing import Any

from ringkv.cli.common import (
    EXIT_CODES,
    positive_float,
    positive_int,
    print_json,
    progress,
    require_token,
    seeds,
    whole_number,
)
from ringkv.digits import is_digits

__all__ = ["add_commands", "parse_size"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """`64MiB`, `512k`, `1g`, `1000000` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(i?b)?\s*", text.lower())
    if not match or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"must be a size such as 64MiB or 512k, not {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def zstd_level(text: str) -> int:
    """A zstandard level, 1 to 19."""
    if not is_digits(text.strip()) or not 1 <= int(text) <= 19:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 19, not {text!r}")
    return int(text)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _store(args: argparse.Namespace, location: str | None) -> Any:
    from ringkv.stores import S3Options, open_store

    options = S3Options.from_env(
        endpoint_url=args.s3_endpoint,
        region=args.s3_region,
        path_style=args.s3_path_style,
        timeout_s=args.timeout,  # --timeout: also for each answer of the S3 endpoint
    )
    return open_store(location or "", options)


def _backup_location(args: argparse.Namespace, flag: str) -> tuple[Any, str | None]:
    """The store and backup id that `--from` (and `--id`) name: a destination,
    or one backup's own location (`<destination>/<id>`, what `create` prints)."""
    from ringkv.backupformat import MANIFEST
    from ringkv.errors import BackupNotFoundError
    from ringkv.stores import split_location

    location = getattr(args, flag)
    if not location:
        raise ValueError(
            f"give --{flag} (or RINGKV_BACKUP_LOCATION): a directory or s3://bucket/prefix"
        )
    if args.id is not None:
        return _store(args, location), args.id
    parent, last = split_location(location)
    if last is not None:
        store = _store(args, parent)
        try:
            store.get(f"{last}/{MANIFEST}")
            return store, last
        except BackupNotFoundError:
            pass
    return _store(args, location), None


class _Bar:
    """A progress bar of keys with bytes and rate, or nothing off a terminal."""

    def __init__(self, desc: str, enabled: bool, total: int | None = None) -> None:
        self._bar = progress(total, desc, enabled)
        self.bytes = 0

    def __call__(self, records: int, size: int) -> None:
        self.bytes += size
        self._bar.update(records)
        if size and hasattr(self._bar, "set_postfix_str"):
            self._bar.set_postfix_str(_mb(self.bytes), refresh=False)

    def close(self) -> None:
        self._bar.close()


def _with_bar(desc: str, args: argparse.Namespace, run: Any, *pos: Any, **kw: Any) -> Any:
    """`run(*pos, progress=bar, **kw)` with a progress bar that is closed after."""
    bar = _Bar(desc, not args.quiet)
    try:
        return run(*pos, progress=bar, **kw)
    finally:
        bar.close()


def _emit(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    """The closing summary: `doc` as JSON with --json, else `text`; and `doc` in
    --summary-file too (a Job's /dev/termination-log, which the operator reads)."""
    if args.json:
        print_json(doc)
    else:
        print(text)
    if getattr(args, "summary_file", None):
        with open(args.summary_file, "w") as f:
            json.dump(doc, f, separators=(",", ":"))


def _drill(args: argparse.Namespace, store: Any, backup_id: str) -> Any:
    from ringkv.drill import drill

    return _with_bar("drill", args, drill, store, backup_id)


def _create(args: argparse.Namespace) -> int:
    from ringkv import backup

    store = _store(args, args.to)
    started = time.perf_counter()
    manifest = _with_bar(
        "backup",
        args,
        backup.create,
        seeds(args.url),
        require_token(args, "backup"),
        store,
        cluster=args.cluster,
        backup_id=args.id,
        part_size=args.part_size,
        consistency=args.consistency,
        timeout=args.timeout,
        workers=args.workers,
        zstd_level=args.zstd_level,
        ring_wait_s=args.ring_wait,
    )
    seconds = time.perf_counter() - started
    location = f"{store.location.rstrip('/')}/{manifest.backup_id}"
    raw = sum(p.raw_size for p in manifest.parts)
    doc: dict[str, Any] = {
        "backup_id": manifest.backup_id,
        "location": location,
        "cluster": manifest.cluster,
        "started_at": _iso(manifest.created_ms),
        "completed_at": _iso(manifest.completed_ms),
        "keys": manifest.records,
        "partitions": manifest.partitions,
        "parts": len(manifest.parts),
        "size_bytes": manifest.size_bytes,
        "raw_bytes": raw,
        "ring_epoch": manifest.ring_epoch,
        "seconds": round(seconds, 3),
    }
    text = (
        f"backup {manifest.backup_id} of cluster {manifest.cluster}: {manifest.records} "
        f"records ({manifest.partitions} partitions, ring epoch {manifest.ring_epoch}) in "
        f"{len(manifest.parts)} parts, {_mb(manifest.size_bytes)} ({_mb(raw)} before "
        f"compression), {seconds:.1f} s ({manifest.records / max(seconds, 1e-9):,.0f} keys/s, "
        f"{raw / 1e6 / max(seconds, 1e-9):.1f} MB/s)\n{location}"
    )
    code = 0
    if args.verify == "restore":
        result = _drill(args, store, manifest.backup_id)
        doc["verified"] = result.message
        doc["verified_ok"] = result.ok
        text += "\n" + result.message
        code = 0 if result.ok else 2
    _emit(args, doc, text)
    return code


def _iso(ms: int) -> str:
    from ringkv.backupformat import iso_ms

    return iso_ms(ms)


def _list(args: argparse.Namespace) -> int:
    from ringkv import backup
    from ringkv.backupformat import Manifest

    store = _store(args, getattr(args, "from"))
    rows = backup.listing(store)
    if args.json:
        print_json(
            {
                "location": store.location,
                "backups": [
                    {
                        "backup_id": m.backup_id,
                        "cluster": m.cluster,
                        "created_at": _iso(m.created_ms),
                        "keys": m.records,
                        "size_bytes": m.size_bytes,
                        "parts": len(m.parts),
                    }
                    if isinstance(m, Manifest)
                    else {"backup_id": m[0], "error": m[1]}
                    for m in rows
                ],
            }
        )
        return 0
    for m in rows:
        if isinstance(m, Manifest):
            print(
                f"{m.backup_id:<28} {_iso(m.created_ms)}  cluster {m.cluster:<12} "
                f"{m.records:>10} keys  {_mb(m.size_bytes):>10}  {len(m.parts)} parts"
            )
        else:
            print(f"{m[0]:<28} INVALID: {m[1]}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ringkv import backup

    store, backup_id = _backup_location(args, "from")
    found = _with_bar("verify", args, backup.verify, store, backup_id)
    m = found.manifest
    doc: dict[str, Any] = {
        "backup_id": m.backup_id,
        "verified": True,
        "keys": found.records,
        "tombstones": found.tombstones,
        "expired": found.expired,
        "parts": len(m.parts),
        "size_bytes": m.size_bytes,
        "raw_bytes": found.raw_bytes,
    }
    text = (
        f"backup {m.backup_id} verifies: {len(m.parts)} parts, sums and counts match; "
        f"{found.records} records ({found.tombstones} tombstones, {found.expired} expired "
        "since)"
    )
    if not args.restore:
        _emit(args, doc, text)
        return 0
    result = _drill(args, store, m.backup_id)
    doc.update(verified=result.ok, drill=result.message, drill_keys=result.keys)
    _emit(args, doc, text + "\n" + result.message)
    return 0 if result.ok else 2


def _delete(args: argparse.Namespace) -> int:
    from ringkv import backup
    from ringkv.errors import BackupNotFoundError

    store = _store(args, getattr(args, "from"))
    deleted: dict[str, int] = {}
    missing: list[str] = []
    for bid in dict.fromkeys(args.ids):  # each once, in the order given
        try:
            deleted[bid] = backup.delete(store, bid)
        except BackupNotFoundError:
            if not args.missing_ok:
                raise
            missing.append(bid)
    lines = [f"deleted backup {bid} ({objects} objects)" for bid, objects in deleted.items()]
    lines += [f"no backup {bid}: nothing to delete" for bid in missing]
    _emit(args, {"deleted": list(deleted), "missing": missing}, "\n".join(lines))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from ringkv import backup
    from ringkv.retention import Retention

    policy = Retention(args.keep_last, args.keep_daily, args.keep_weekly, args.keep_monthly)
    store = _store(args, getattr(args, "from"))
    decision = backup.prune(store, policy, dry_run=args.dry_run)
    if args.json:
        print_json({"keep": decision.keep, "pruned": decision.prune, "dry_run": args.dry_run})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for bid, why in decision.keep.items():
            print(f"keep   {bid} ({', '.join(why)})")
        for bid in decision.prune:
            print(f"{verb} {bid}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from ringkv import backup

    store, backup_id = _backup_location(args, "from")
    token = require_token(args, "restore")
    summary = _with_bar(
        "restore",
        args,
        backup.restore,
        store,
        backup_id,
        seeds(args.url),
        token,
        consistency=args.consistency,
        batch=args.batch,
        workers=args.workers,
        timeout=args.timeout,
        keep_bytes=args.keep_parts_mb << 20,
    )
    rate = summary.records / max(summary.seconds, 1e-9)
    doc = {
        "backup_id": summary.backup_id,
        "records": summary.records,
        "written": summary.written,
        "tombstones": summary.tombstones,
        "expired": summary.expired,
        "kept": summary.kept,
        "coordinated": summary.coordinated,  # batches written through a coordinator
        "seconds": round(summary.seconds, 3),
    }
    text = (
        f"restored backup {summary.backup_id}: {summary.written} records written "
        f"({summary.tombstones} tombstones), {summary.expired} skipped as expired, "
        f"{summary.kept} already there at that version or newer; {summary.seconds:.1f} s "
        f"({rate:,.0f} keys/s)"
    )
    _emit(args, doc, text)
    return 0


def _s3_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--s3-endpoint",
        default=None,
        help="S3-compatible endpoint URL (default: $RINGKV_S3_ENDPOINT, else $AWS_ENDPOINT_URL "
        "or AWS)",
    )
    p.add_argument(
        "--s3-region", default=None, help="region (default: $RINGKV_S3_REGION, else $AWS_REGION)"
    )
    p.add_argument(
        "--s3-path-style",
        action="store_const",
        const=True,
        default=None,
        help="path-style bucket addressing (default: $RINGKV_S3_PATH_STYLE, else off)",
    )


def _writable(path: str) -> str:
    """`path` when it can be written (the file, else its directory): a summary
    that cannot be written is said before the work, not after it."""
    where = path if os.path.exists(path) else (os.path.dirname(path) or ".")
    if os.path.isdir(path) or not os.access(where, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path}")
    return path


def _summary_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--summary-file",
        type=_writable,
        default=None,
        metavar="PATH",
        help="also write the JSON summary there (a Kubernetes Job: /dev/termination-log)",
    )


def add_commands(sub: Any, formatter: type[argparse.HelpFormatter], conn: Any, quiet: Any) -> None:
    """`ringkv backup ...` and `ringkv restore` under the `ringkv` parser's subcommands."""
    where = os.environ.get("RINGKV_BACKUP_LOCATION") or None
    dest_help = "a directory, or s3://bucket/prefix (default: $RINGKV_BACKUP_LOCATION)"

    def one(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--from", default=where, help=f"the destination, or one backup's location: {dest_help}"
        )
        p.add_argument(
            "--id",
            default=None,
            help="the backup id, or `latest` (default: the one --from names, else the newest)",
        )

    def consistency(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument(
            "--consistency",
            choices=["quorum", "all"],
            default="quorum",
            help=f"{what} a quorum of each partition's owners, or all of them",
        )

    backup = sub.add_parser(
        "backup",
        help="back the cluster up, and list, verify, delete and prune backups",
        formatter_class=formatter,
    )
    bsub = backup.add_subparsers(dest="backup_command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, text: str, *parents: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = bsub.add_parser(
            name, parents=[conn, *parents], help=text, description=text,
            formatter_class=formatter, epilog=EXIT_CODES,
        )  # fmt: skip
        _s3_options(p)
        _summary_option(p)
        p.set_defaults(func=func)
        return p

    p = command("create", _create, "back the whole cluster up", quiet)
    p.add_argument("--to", default=where, help=f"where: {dest_help}")
    p.add_argument(
        "--cluster",
        default=os.environ.get("RINGKV_CLUSTER") or "ringkv",
        help="the cluster's name, for the manifest (default: $RINGKV_CLUSTER, else ringkv)",
    )
    p.add_argument(
        "--id", default=None, help="the backup id (default: the UTC time and 4 hex digits)"
    )
    p.add_argument(
        "--part-size", type=parse_size, default="64MiB", help="records per part before compression"
    )
    p.add_argument(
        "--zstd-level",
        type=zstd_level,
        default=1,
        help="zstandard level, 1 (fastest, the default) to 19 (smallest parts)",
    )
    p.add_argument(
        "--ring-wait",
        type=positive_float,
        default=600.0,  # ringkv.backup.RING_WAIT_S
        metavar="SECONDS",
        help="how long to wait for a ring change that is committing before the backup begins",
    )
    consistency(p, "read")
    p.add_argument("--workers", type=positive_int, default=4, help="partitions read at once")
    p.add_argument(
        "--verify",
        choices=["none", "restore"],
        default="none",
        help="restore: then run a restore drill (see `backup verify --restore`)",
    )
    p = command("list", _list, "the backups at a destination, oldest first")
    p.add_argument("--from", default=where, help=dest_help)
    p = command(
        "verify", _verify, "re-read every part of a backup: sizes, sums, order, counts", quiet
    )
    one(p)
    p.add_argument(
        "--restore",
        action="store_true",
        help="also a restore drill: restore into a throw-away one-node store (started here; "
        "needs ringkv-node) and compare every partition's live keys with the backup",
    )
    p = command("delete", _delete, "delete backups and their data")
    p.add_argument("--from", default=where, help=dest_help)
    p.add_argument("ids", nargs="+", metavar="ID", help="backup ids")
    p.add_argument(
        "--missing-ok", action="store_true", help="a backup that is not there is not an error"
    )
    p = command("prune", _prune, "delete the backups a retention policy does not keep")
    p.add_argument("--from", default=where, help=dest_help)
    for tier, text in (
        ("last", "the newest N backups"),
        ("daily", "the newest backup of each of the last N days (UTC) that have one"),
        ("weekly", "the newest of each of the last N ISO weeks that have one"),
        ("monthly", "the newest of each of the last N months that have one"),
    ):
        p.add_argument(
            f"--keep-{tier}", type=whole_number, default=0, metavar="N", help=f"keep {text}"
        )
    p.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")

    p = sub.add_parser(
        "restore",
        parents=[conn, quiet],
        help="write a backup into a cluster of any size (checks it first)",
        description="write a backup into a cluster of any size, keeping versions and expiry "
        "(every part's size and sum are checked before anything is written)",
        formatter_class=formatter,
        epilog=EXIT_CODES,
    )
    _s3_options(p)
    _summary_option(p)
    one(p)
    consistency(p, "write to")
    p.add_argument(
        "--batch",
        type=positive_int,
        default=5000,  # ringkv.backup.RESTORE_BATCH
        help="records per write call, at most 10000",
    )
    p.add_argument("--workers", type=positive_int, default=4, help="write calls in flight")
    p.add_argument(
        "--keep-parts-mb",
        type=whole_number,
        default=256,  # ringkv.backup.KEEP_BYTES
        metavar="MB",
        help="MiB of checked parts kept in memory for the writing, so that they are not "
        "read (downloaded) twice; 0: read every part again",
    )
    p.set_defaults(func=_restore)
