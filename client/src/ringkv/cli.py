"""The `ringkv` command line: data commands over the client, and `local` clusters.

    ringkv put greeting hello            ringkv get greeting
    ringkv keys --prefix user:           ringkv status / ring
    ringkv dump > backup.jsonl           ringkv load backup.jsonl
    ringkv backup create --to DIR        ringkv restore --from DIR
    ringkv local up --nodes 3

`--url` (or RINGKV_URL, default http://127.0.0.1:7100) and `--token` (or
RINGKV_TOKEN; `--token-file` or RINGKV_TOKEN_FILE) choose the cluster, before
or after the command; `--no-direct` (or RINGKV_DIRECT=0) sends every request
to `--url` only, for a cluster reached through a port-forward (`kubectl
ringkv connect`). Output is for people; `--json` is for scripts (values in
base64). Exit codes: `EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from ringkv._cli_common import (
    DEFAULT_URL,
    EXIT_CODES,
    _b64,
    _Help,
    _json,
    _not_found,
    _value_text,
    direct,
    exit_code,
    positive_float,
    positive_int,
    progress,
    seeds,
    token,
)
from ringkv.errors import (
    RingkvError,
)
from ringkv.exits import CLUSTER_ERROR, OK

__all__ = ["EXIT_CODES", "build_parser", "exit_code", "main"]


def _client(args: argparse.Namespace) -> Any:
    from ringkv.client import Client

    return Client(seeds(args.url), token=token(args), timeout=args.timeout, direct=direct(args))


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        entry = kv.get_entry(args.key, consistency=args.consistency)
    if entry is None:
        return _not_found(args, {"key": args.key, "found": False})
    if args.json:
        _json(
            {
                "key": args.key,
                "found": True,
                "value": _b64(entry.value),
                "version": entry.version,
                "expires_ms": entry.expires_ms,
            }
        )
    else:
        sys.stdout.buffer.write(entry.value + (b"" if args.raw else b"\n"))
    return OK


def cmd_put(args: argparse.Namespace) -> int:
    value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
    with _client(args) as kv:
        previous = kv.put(args.key, value, consistency=args.consistency, ttl=args.ttl)
    if args.json:
        _json({"key": args.key, "created": previous is None, "previous": _b64(previous)})
    else:
        print("created" if previous is None else f"updated (was {_value_text(previous)})")
    return OK


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        previous = kv.delete(args.key, consistency=args.consistency)
    if previous is None:
        return _not_found(args, {"key": args.key, "deleted": False})
    if args.json:
        _json({"key": args.key, "deleted": True, "previous": _b64(previous)})
    else:
        print(f"deleted (was {_value_text(previous)})")
    return OK


def cmd_keys(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        want = None if args.limit is None else args.limit + 1  # one more: are there more?
        keys = kv.keys(prefix=args.prefix, start_after=args.start_after, limit=want)
    nxt = None
    if args.limit is not None and len(keys) > args.limit:
        keys = keys[: args.limit]
        nxt = keys[-1]
    if args.json:
        _json({"keys": keys, "next": nxt})
        return OK
    if keys:
        print("\n".join(keys))
    if nxt is not None:
        print(f"(more: --start-after {nxt})", file=sys.stderr)
    return OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        ring = kv.ring()
        # Not direct: the members' URLs may be out of reach; ask the --url nodes only.
        asked = (
            [(m.id, m.url) for m in ring.members]
            if direct(args)
            else [(url, url) for url in kv.seeds]
        )
        nodes = []
        for node_id, url in asked:
            try:
                nodes.append(kv.status(url))
            except RingkvError as exc:
                nodes.append({"node_id": node_id, "error": str(exc)})
    answered = {st["node_id"] for st in nodes}
    not_asked = [m.id for m in ring.members if m.id not in answered]
    unwell = [st["node_id"] for st in nodes if "error" in st or not st.get("ready")]
    if args.json:
        _json({"epoch": ring.epoch, "healthy": not unwell, "nodes": nodes, "not_asked": not_asked})
    else:
        print(f"ring epoch {ring.epoch}: {ring.partitions} partitions, N={ring.replication_factor}")
        for st in nodes:
            if "error" in st:
                print(f"  {st['node_id']:<16} DOWN  {st['error']}")
                continue
            storage = st["storage"]
            hints = sum(st["hints"]["backlog"].values())
            print(
                f"  {st['node_id']:<16} {'ready' if st['ready'] else 'NOT READY':<9} "
                f"partitions {st['partitions_owned']:<5} keys {storage.get('live', '?'):<9} "
                f"tombstones {storage.get('tombstones', '?'):<7} hints {hints:<6} "
                f"out-of-sync buckets {st['anti_entropy']['buckets_out_of_sync']}"
            )
        if not_asked:
            print(
                f"  not asked (direct routing off: only --url is reachable): {', '.join(not_asked)}"
            )
    if unwell:
        print(f"ringkv: not healthy: {', '.join(unwell)} down or not ready", file=sys.stderr)
        return CLUSTER_ERROR
    return OK


def cmd_ring(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        ring = kv.ring()
    if args.json:
        _json(ring.to_dict())
        return OK
    print(f"epoch {ring.epoch}, {ring.partitions} partitions, N={ring.replication_factor}")
    for m in ring.members:
        zone = f" zone {m.zone}" if m.zone else ""
        print(f"  {m.id:<16} {m.url}{zone}  owns {len(ring.partitions_of(m.id))} partitions")
    return OK


async def _dump(args: argparse.Namespace, out: IO[str]) -> int:
    from ringkv.aio import AsyncClient
    from ringkv.dumpfile import DumpRecord, to_line

    count = deleted = 0
    async with AsyncClient(
        seeds(args.url), token=token(args), timeout=args.timeout, direct=direct(args)
    ) as kv:
        keys = [k async for k in kv.iter_keys(prefix=args.prefix)]
        bar = progress(len(keys), "dump", not args.quiet)
        sem = asyncio.Semaphore(32)

        async def fetch(key: str) -> DumpRecord | None:
            async with sem:
                entry = await kv.get_entry(key)
            if entry is None:  # deleted since it was listed
                return None
            return DumpRecord(key, entry.value, entry.version, entry.expires_ms)

        for start in range(0, len(keys), 1000):
            chunk = await asyncio.gather(*(fetch(k) for k in keys[start : start + 1000]))
            for rec in chunk:
                if rec is not None:
                    out.write(to_line(rec))
                    count += 1
            bar.update(len(chunk))
        bar.close()
        if args.deleted:
            async for key in kv.iter_keys(prefix=args.prefix, deleted=True):
                out.write(to_line(DumpRecord(key, deleted=True)))
                deleted += 1
    out.flush()
    extra = f" and {deleted} deleted" if args.deleted else ""
    print(f"dumped {count} keys{extra}", file=sys.stderr)
    return OK


def cmd_load(args: argparse.Namespace) -> int:
    from ringkv.client import Batch
    from ringkv.dumpfile import parse

    source = sys.stdin if args.file == "-" else open(args.file)  # noqa: SIM115
    bar = progress(None, "load", not args.quiet)
    loaded = expired = deleted = 0
    now_ms = time.time_ns() // 1_000_000
    try:
        with _client(args) as kv:
            batch: Batch = kv.batch()
            for rec in parse(source):
                if rec.deleted:
                    batch.delete(rec.key)
                    deleted += 1
                elif rec.expired(now_ms):
                    expired += 1  # it would read as absent: not written at all
                    continue
                else:
                    batch.put(rec.key, rec.value, expires_ms=rec.expires_ms)
                    loaded += 1
                if len(batch.ops) >= 500:
                    bar.update(len(batch.execute()))
                    batch = kv.batch()
            if batch.ops:
                bar.update(len(batch.execute()))
    finally:
        bar.close()
        if source is not sys.stdin:
            source.close()
    if args.json:
        _json({"loaded": loaded, "deleted": deleted, "expired": expired})
    else:
        print(
            f"loaded {loaded} keys, deleted {deleted}, skipped {expired} already expired",
            file=sys.stderr,
        )
    return OK


# -- the parser ------------------------------------------------------------------


def _connection_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    """--url, --token, --timeout, --json: before the command (`top`) or after it.

    After it they default to SUPPRESS, so a value given before the command
    is not overwritten by the subcommand's default (argparse would)."""

    def dflt(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    url = os.environ.get("RINGKV_URL") or DEFAULT_URL
    p.add_argument(
        "--url",
        default=dflt(url),
        help="node URL, comma-separated seeds, or ringkv://<headless service>:8080; "
        f"host:port means http://host:port (default: $RINGKV_URL, else {DEFAULT_URL})",
    )
    p.add_argument(
        "--token",
        default=dflt(os.environ.get("RINGKV_TOKEN") or None),
        help="the cluster token, when the cluster requires one (default: $RINGKV_TOKEN)",
    )
    p.add_argument(
        "--token-file",
        default=dflt(os.environ.get("RINGKV_TOKEN_FILE") or None),
        help="read the cluster token from this file, e.g. a mounted Secret "
        "(default: $RINGKV_TOKEN_FILE)",
    )
    p.add_argument(
        "--direct",
        action=argparse.BooleanOptionalAction,
        default=dflt(None),
        help="send each key straight to its owners' own URLs (on), or every request to --url "
        "only (--no-direct: for a cluster reached through a port-forward or a load balancer; "
        "any node coordinates any key) (default: $RINGKV_DIRECT=1|0, else on)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=dflt(10.0),
        help="seconds to wait for each answer (default: 10)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=dflt(False),
        help="JSON output for scripts; values are base64",
    )


def build_parser() -> argparse.ArgumentParser:
    from ringkv import _cli_backup, _cli_local

    conn = argparse.ArgumentParser(add_help=False)
    _connection_options(conn, top=False)
    level = argparse.ArgumentParser(add_help=False)
    level.add_argument(
        "--consistency",
        choices=["one", "quorum", "all"],
        default=None,
        help="how many replicas must answer (default: the cluster's, quorum)",
    )
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bar")

    parser = argparse.ArgumentParser(
        prog="ringkv",
        allow_abbrev=False,  # `--to` of `backup create` is not an abbreviation of `--token`
        description=(__doc__ or "").split("\n")[0],
        formatter_class=_Help,
        epilog=EXIT_CODES,
    )
    _connection_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], int], text: str, *parents: Any
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            parents=[conn, *parents],
            help=text,
            description=text,
            formatter_class=_Help,
            epilog=EXIT_CODES,
        )
        p.set_defaults(func=func)
        return p

    p = command("get", cmd_get, "print a key's value", level)
    p.add_argument("key", help="the key")
    p.add_argument("--raw", action="store_true", help="no newline after the value")
    p = command("put", cmd_put, "store a value", level)
    p.add_argument("key", help="the key")
    p.add_argument("value", help="the value; '-' reads it from stdin")
    p.add_argument("--ttl", type=positive_int, default=None, help="expire after this many seconds")
    p = command("delete", cmd_delete, "delete a key", level)
    p.add_argument("key", help="the key")
    p = command("keys", cmd_keys, "list keys in order")
    p.add_argument("--prefix", default=None, help="only keys that start with this")
    p.add_argument("--start-after", default=None, help="only keys after this one (a cursor)")
    p.add_argument("--limit", type=positive_int, default=None, help="at most this many keys")
    command("status", cmd_status, "every node's state; exits 3 when a member is down or not ready")
    command("ring", cmd_ring, "members and partition ownership")
    p = command(
        "dump", lambda a: asyncio.run(_dump(a, sys.stdout)), "write every key as JSON lines", quiet
    )
    p.add_argument("--prefix", default=None, help="only keys that start with this")
    p.add_argument(
        "--deleted",
        action="store_true",
        help="also write the keys deleted within the tombstone grace period, so that a load "
        "deletes them in the target too",
    )
    p = command("load", cmd_load, "load JSON lines written by dump", quiet)
    p.add_argument("file", nargs="?", default="-", help="the dump file; '-' reads stdin")

    _cli_backup.add_commands(sub, _Help, conn, quiet)
    _cli_local.add_commands(sub, _Help)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (RingkvError, ValueError, OSError) as exc:
        print(f"ringkv: {exc}", file=sys.stderr)
        return exit_code(exc)
