"""The data commands: `ringkv get / put / delete / keys / status / ring / dump / load`.

Each opens a client on `--url` (straight to the owners, or `--no-direct`)
and does one thing. Output is for people; `--json` is for scripts (values in
base64). `dump` writes every key as JSON lines (`ringkv.dumpfile`) and `load`
reads them back, with a progress bar only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from ringkv.cli.common import (
    EXIT_CODES,
    b64,
    direct,
    not_found,
    positive_int,
    print_json,
    progress,
    seeds,
    token,
    value_text,
)
from ringkv.errors import RingkvError
from ringkv.exits import CLUSTER_ERROR, OK

__all__ = ["add_commands"]


def _client(args: argparse.Namespace) -> Any:
    from ringkv.client import Client

    return Client(seeds(args.url), token=token(args), timeout=args.timeout, direct=direct(args))


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        entry = kv.get_entry(args.key, consistency=args.consistency)
    if entry is None:
        return not_found(args, {"key": args.key, "found": False})
    if args.json:
        print_json(
            {
                "key": args.key,
                "found": True,
                "value": b64(entry.value),
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
        print_json({"key": args.key, "created": previous is None, "previous": b64(previous)})
    else:
        print("created" if previous is None else f"updated (was {value_text(previous)})")
    return OK


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        previous = kv.delete(args.key, consistency=args.consistency)
    if previous is None:
        return not_found(args, {"key": args.key, "deleted": False})
    if args.json:
        print_json({"key": args.key, "deleted": True, "previous": b64(previous)})
    else:
        print(f"deleted (was {value_text(previous)})")
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
        print_json({"keys": keys, "next": nxt})
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
        print_json(
            {"epoch": ring.epoch, "healthy": not unwell, "nodes": nodes, "not_asked": not_asked}
        )
    else:
        print(f"ring epoch {ring.epoch}: {ring.partitions} partitions, N={ring.replication_factor}")
        for st in nodes:
            if "error" in st:
                print(f"  {st['node_id']:<16} DOWN  {st['error']}")
                continue
            backlog = _field(st, "hints", "backlog")
            counts = list(backlog.values()) if isinstance(backlog, dict) else None
            hints = (
                sum(counts) if counts is not None and all(type(c) is int for c in counts) else "?"
            )
            print(
                f"  {st['node_id']:<16} {'ready' if st['ready'] else 'NOT READY':<9} "
                f"partitions {_shown(st, 'partitions_owned'):<5} "
                f"keys {_shown(st, 'storage', 'live'):<9} "
                f"tombstones {_shown(st, 'storage', 'tombstones'):<7} hints {hints!s:<6} "
                f"out-of-sync buckets {_shown(st, 'anti_entropy', 'buckets_out_of_sync')}"
            )
        if not_asked:
            print(
                f"  not asked (direct routing off: only --url is reachable): {', '.join(not_asked)}"
            )
    if unwell:
        print(f"ringkv: not healthy: {', '.join(unwell)} down or not ready", file=sys.stderr)
        return CLUSTER_ERROR
    return OK


def _field(doc: Any, *path: str) -> Any:
    """`doc[path[0]][path[1]]...`, or "?" where a node of another version has no such field."""
    for name in path:
        if not isinstance(doc, dict) or name not in doc:
            return "?"
        doc = doc[name]
    return doc


def _shown(doc: Any, *path: str) -> str:
    return str(_field(doc, *path))


def cmd_ring(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        ring = kv.ring()
    if args.json:
        print_json(ring.to_dict())
        return OK
    print(f"epoch {ring.epoch}, {ring.partitions} partitions, N={ring.replication_factor}")
    for m in ring.members:
        zone = f" zone {m.zone}" if m.zone else ""
        print(f"  {m.id:<16} {m.url}{zone}  owns {len(ring.partitions_of(m.id))} partitions")
    return OK


def cmd_dump(args: argparse.Namespace) -> int:
    """With the cluster token and direct routing, read as a backup reads
    (`backup.dump_records`: a partition a request from a read quorum of its
    owners, many times as fast as a GET a key); else key by key (`_dump`:
    through one forwarded address the owners cannot be reached)."""
    from ringkv.backup import dump_records
    from ringkv.dumpfile import to_line

    cluster_token = token(args)
    if cluster_token is None or not direct(args):
        return asyncio.run(_dump(args, sys.stdout))
    out = sys.stdout
    bar = progress(None, "dump", not args.quiet)
    count = deleted = 0
    try:
        for rec in dump_records(
            seeds(args.url),
            cluster_token,
            prefix=args.prefix or "",
            deleted=args.deleted,
            timeout=args.timeout,
            progress=lambda records, raw: bar.update(records),
        ):
            out.write(to_line(rec))
            if rec.deleted:
                deleted += 1
            else:
                count += 1
    finally:
        bar.close()
    return _dumped(args, out, count, deleted)


def _dumped(args: argparse.Namespace, out: IO[str], count: int, deleted: int) -> int:
    """A dump's closing line (on stderr: stdout is the dump)."""
    out.flush()
    extra = f" and {deleted} deleted" if args.deleted else ""
    print(f"dumped {count} keys{extra}", file=sys.stderr)
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
    return _dumped(args, out, count, deleted)


LOAD_BATCH = 5000  # records a load writes a call (was 500: 200k keys 4.9 s, now 3.3)


def cmd_load(args: argparse.Namespace) -> int:
    from ringkv.client import Batch
    from ringkv.dumpfile import parse

    source = sys.stdin if args.file == "-" else open(args.file)  # noqa: SIM115
    bar = progress(None, "load", not args.quiet)
    loaded = expired = deleted = 0
    now_ms = time.time_ns() // 1_000_000
    written = 0
    try:
        with _client(args) as kv:
            batch: Batch = kv.batch()
            try:
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
                    if len(batch.ops) >= LOAD_BATCH:
                        written += len(batch.execute())
                        bar.update(len(batch.ops))
                        batch = kv.batch()
                if batch.ops:
                    written += len(batch.execute())
                    bar.update(len(batch.ops))
            except ValueError as exc:  # a bad record: a load writes as it reads
                raise ValueError(
                    f"{exc}; the {written} record{'' if written == 1 else 's'} before it "
                    "were written"
                ) from None
    finally:
        bar.close()
        if source is not sys.stdin:
            source.close()
    if args.json:
        print_json({"loaded": loaded, "deleted": deleted, "expired": expired})
    else:
        print(
            f"loaded {loaded} keys, deleted {deleted}, skipped {expired} already expired",
            file=sys.stderr,
        )
    return OK


def add_commands(sub: Any, formatter: type[argparse.HelpFormatter], conn: Any, quiet: Any) -> None:
    """The data commands under the `ringkv` parser's subcommands."""
    level = argparse.ArgumentParser(add_help=False)
    level.add_argument(
        "--consistency",
        choices=["one", "quorum", "all"],
        default=None,
        help="how many replicas must answer (default: the cluster's, quorum)",
    )

    def command(
        name: str, func: Callable[[argparse.Namespace], int], text: str, *parents: Any
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            parents=[conn, *parents],
            help=text,
            description=text,
            formatter_class=formatter,
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
    p = command("dump", cmd_dump, "write every key as JSON lines", quiet)
    p.add_argument("--prefix", default=None, help="only keys that start with this")
    p.add_argument(
        "--deleted",
        action="store_true",
        help="also write the keys deleted within the tombstone grace period, so that a load "
        "deletes them in the target too",
    )
    p = command("load", cmd_load, "load JSON lines written by dump", quiet)
    p.add_argument("file", nargs="?", default="-", help="the dump file; '-' reads stdin")
