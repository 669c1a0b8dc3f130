"""The `ringkv` command line: data commands over the client, and `local` clusters.

    ringkv put greeting hello            ringkv get greeting
    ringkv keys --prefix user:           ringkv status / ring
    ringkv dump > backup.jsonl           ringkv load < backup.jsonl
    ringkv local up --nodes 3

`--url` (or RINGKV_URL, default http://127.0.0.1:7100) and `--token` (or
RINGKV_TOKEN) choose the cluster. Output is for people; `--json` is for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from ringkv.errors import RingkvError

__all__ = ["main"]


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr when tqdm is installed and stderr is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="key", file=sys.stderr)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _client(args: argparse.Namespace) -> Any:
    from ringkv.client import Client

    return Client(args.url.split(","), token=args.token, timeout=args.timeout)


def _out(args: argparse.Namespace, doc: Any, human: str) -> None:
    print(json.dumps(doc) if args.json else human)


def _value_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        value = kv.get(args.key, consistency=args.consistency)
    if value is None:
        _out(args, {"key": args.key, "found": False}, f"(not found: {args.key})")
        return 1
    if args.json:
        _out(args, {"key": args.key, "value": base64.b64encode(value).decode()}, "")
    else:
        sys.stdout.buffer.write(value + (b"" if args.raw else b"\n"))
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
    with _client(args) as kv:
        previous = kv.put(args.key, value, consistency=args.consistency, ttl=args.ttl)
    human = "created" if previous is None else f"updated (was {_value_text(previous)})"
    prev64 = None if previous is None else base64.b64encode(previous).decode()
    _out(args, {"key": args.key, "previous": prev64}, human)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        previous = kv.delete(args.key, consistency=args.consistency)
    if previous is None:
        _out(args, {"key": args.key, "deleted": False}, f"(not found: {args.key})")
        return 1
    _out(args, {"key": args.key, "deleted": True}, f"deleted (was {_value_text(previous)})")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        keys = kv.keys(prefix=args.prefix, start_after=args.start_after, limit=args.limit)
    _out(args, {"keys": keys}, "\n".join(keys))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        ring = kv.ring()
        nodes = []
        for member in ring.members:
            try:
                nodes.append(kv.status(member.url))
            except RingkvError as exc:
                nodes.append({"node_id": member.id, "error": str(exc)})
    if args.json:
        _out(args, {"epoch": ring.epoch, "nodes": nodes}, "")
        return 0
    print(f"ring epoch {ring.epoch}: {ring.partitions} partitions, N={ring.replication_factor}")
    for st in nodes:
        if "error" in st:
            print(f"  {st['node_id']:<16} DOWN  {st['error']}")
            continue
        hints = sum(st["hints"]["backlog"].values())
        print(
            f"  {st['node_id']:<16} {'ready' if st['ready'] else 'NOT READY':<9} "
            f"partitions {st['partitions_owned']:<5} entries {st['storage']['entries']:<9} "
            f"hints {hints:<6} out-of-sync buckets {st['anti_entropy']['buckets_out_of_sync']}"
        )
    return 0


def cmd_ring(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        ring = kv.ring()
    if args.json:
        _out(args, ring.to_dict(), "")
        return 0
    print(f"epoch {ring.epoch}, {ring.partitions} partitions, N={ring.replication_factor}")
    for m in ring.members:
        zone = f" zone {m.zone}" if m.zone else ""
        print(f"  {m.id:<16} {m.url}{zone}  owns {len(ring.partitions_of(m.id))} partitions")
    return 0


async def _dump(args: argparse.Namespace, out: IO[str]) -> int:
    from ringkv.aio import AsyncClient

    count = 0
    async with AsyncClient(args.url.split(","), token=args.token, timeout=args.timeout) as kv:
        keys = [k async for k in kv.iter_keys(prefix=args.prefix)]
        bar = _progress(len(keys), "dump", not args.quiet)
        sem = asyncio.Semaphore(32)

        async def fetch(key: str) -> tuple[str, bytes | None]:
            async with sem:
                return key, await kv.get(key)

        for start in range(0, len(keys), 1000):
            chunk = await asyncio.gather(*(fetch(k) for k in keys[start : start + 1000]))
            for key, value in chunk:
                if value is not None:  # deleted since it was listed
                    out.write(
                        json.dumps({"key": key, "value": base64.b64encode(value).decode()}) + "\n"
                    )
                    count += 1
            bar.update(len(chunk))
        bar.close()
    print(f"dumped {count} keys", file=sys.stderr)
    return 0


def _records(lines: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            yield doc["key"], base64.b64decode(doc["value"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {n}: not a ringkv dump record ({exc})") from None


def cmd_load(args: argparse.Namespace) -> int:
    source = sys.stdin if args.file == "-" else open(args.file)  # noqa: SIM115
    bar = _progress(None, "load", not args.quiet)
    count = 0
    try:
        with _client(args) as kv:
            chunk: dict[str, bytes] = {}
            for key, value in _records(source):
                chunk[key] = value
                if len(chunk) >= 500:
                    kv.put_many(chunk)
                    count += len(chunk)
                    bar.update(len(chunk))
                    chunk = {}
            if chunk:
                kv.put_many(chunk)
                count += len(chunk)
                bar.update(len(chunk))
    finally:
        bar.close()
        if source is not sys.stdin:
            source.close()
    print(f"loaded {count} keys", file=sys.stderr)
    return 0


def _local_up(args: argparse.Namespace) -> int:
    from ringkv.local import LocalCluster, cluster_token, load_manifest, plan_nodes, save_manifest

    token = cluster_token(args.data_dir, args.token)
    extra = ["--token", token, "--data-auth", "on" if args.auth else "off"]
    if args.durability:
        extra += ["--durability", args.durability]
    if args.drop_delay:
        extra += ["--drop-delay", args.drop_delay]
    if load_manifest(args.data_dir) is None:
        nodes = plan_nodes(args.nodes, args.host, args.port, args.data_dir)
        save_manifest(args.data_dir, [{"id": n.id, "port": n.port} for n in nodes])
    else:
        print(f"ringkv: using the nodes in {args.data_dir}/cluster.json", file=sys.stderr)
    cluster = LocalCluster(
        args.data_dir, args.host, extra, token_path=os.path.join(args.data_dir, "token")
    )
    return cluster.up()


def _rebalance_to(args: argparse.Namespace, members: list[Any], seed: str) -> Any:
    from ringkv.admin import Rebalancer
    from ringkv.local import cluster_token

    bar = _progress(None, "rebalance", not args.quiet)
    last = [""]

    def on_progress(step: Any, docs: dict[str, Any]) -> None:
        total = sum(d.get("partitions_to_stream", 0) for d in docs.values())
        done = sum(d.get("partitions_streamed", 0) for d in docs.values())
        if isinstance(bar, _NoBar):
            line = f"{step.action}: {step.reason} ({done}/{total} partitions streamed)"
            if line != last[0]:
                print(line, file=sys.stderr)
                last[0] = line
        else:
            bar.total = total
            bar.n = done
            bar.set_postfix_str(step.action)
            bar.refresh()

    rebalancer = Rebalancer(cluster_token(args.data_dir, None))
    try:
        return rebalancer.change(seed, members, on_progress=on_progress, timeout_s=args.timeout)
    finally:
        bar.close()
        rebalancer.close()


def _local_add(args: argparse.Namespace) -> int:
    from ringkv.local import active, load_manifest, save_manifest, wait_ready
    from ringkv.ring import Member

    nodes = load_manifest(args.data_dir)
    if nodes is None:
        raise ValueError(f"no local cluster in {args.data_dir}: run `ringkv local up` first")
    joining = [n for n in nodes if n.get("state") == "joining"]
    if joining:  # a previous add-node stopped half way: finish it
        new = joining[0]
    else:
        number = 1 + max(int(n["id"].rsplit("-", 1)[1]) for n in nodes)
        new = {"id": f"node-{number}", "port": max(n["port"] for n in nodes) + 1}
        nodes.append(new)
    new["state"] = "joining"  # running, but not yet given partitions
    save_manifest(args.data_dir, nodes)
    members = active(nodes, args.host, args.data_dir)
    url = next(m.url for m in members if m.id == new["id"])
    if not wait_ready(url, 60):
        raise ValueError(f"{new['id']} did not start: is `ringkv local up` running?")
    seed = next(m.url for m in members if m.id != new["id"])
    ring = _rebalance_to(args, [Member(m.id, m.url) for m in members], seed)
    new["state"] = "active"
    save_manifest(args.data_dir, nodes)
    print(f"{new['id']} joined at {url}: ring epoch {ring.epoch}, {len(members)} nodes")
    return 0


def _local_remove(args: argparse.Namespace) -> int:
    from ringkv.local import active, load_manifest, save_manifest
    from ringkv.ring import Member

    nodes = load_manifest(args.data_dir)
    if nodes is None:
        raise ValueError(f"no local cluster in {args.data_dir}: run `ringkv local up` first")
    members = active(nodes, args.host, args.data_dir)
    victim = args.id or members[-1].id
    if victim not in {m.id for m in members}:
        raise ValueError(f"{victim} is not an active node of this cluster")
    keep = [m for m in members if m.id != victim]
    if not keep:
        raise ValueError("cannot remove the last node")
    ring = _rebalance_to(args, [Member(m.id, m.url) for m in keep], keep[0].url)
    for n in nodes:
        if n["id"] == victim:
            n["state"] = "removed"
    save_manifest(args.data_dir, nodes)
    print(f"{victim} decommissioned: ring epoch {ring.epoch}, {len(keep)} nodes (data kept)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("RINGKV_URL", "http://127.0.0.1:7100"),
        help="a node URL, comma-separated seeds, or ringkv://<headless service>:8080",
    )
    common.add_argument("--token", default=os.environ.get("RINGKV_TOKEN") or None)
    common.add_argument("--timeout", type=float, default=10.0)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    level = argparse.ArgumentParser(add_help=False)
    level.add_argument("--consistency", choices=["one", "quorum", "all"], default=None)

    parser = argparse.ArgumentParser(prog="ringkv", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("get", parents=[common, level], help="print a value")
    p.add_argument("key")
    p.add_argument("--raw", action="store_true", help="no newline after the value")
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("put", parents=[common, level], help="store a value ('-' reads stdin)")
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--ttl", type=int, default=None, help="expire after this many seconds")
    p.set_defaults(func=cmd_put)
    p = sub.add_parser("delete", parents=[common, level], help="delete a key")
    p.add_argument("key")
    p.set_defaults(func=cmd_delete)
    p = sub.add_parser("keys", parents=[common], help="list keys in order")
    p.add_argument("--prefix", default=None)
    p.add_argument("--start-after", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("status", parents=[common], help="every node's state")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("ring", parents=[common], help="members and partition ownership")
    p.set_defaults(func=cmd_ring)
    p = sub.add_parser("dump", parents=[common], help="write every key as JSON lines to stdout")
    p.add_argument("--prefix", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=lambda a: asyncio.run(_dump(a, sys.stdout)))
    p = sub.add_parser("load", parents=[common], help="load JSON lines written by dump")
    p.add_argument("file", nargs="?", default="-")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_load)

    local = sub.add_parser("local", help="run a cluster of node processes on this machine")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    up = local_sub.add_parser("up", help="start and supervise a local cluster")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--port", type=int, default=7100, help="first node's port")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--data-dir", default=".ringkv")
    up.add_argument("--token", default=None, help="cluster token (default: DATA_DIR/token)")
    up.add_argument(
        "--auth",
        action="store_true",
        help="require the token on data routes too (admin/internal routes always need it)",
    )
    up.add_argument("--durability", choices=["fsync", "async"], default=None)
    up.add_argument("--drop-delay", default=None, help="keep moved-away partitions this long")
    up.set_defaults(func=_local_up)
    for name, func, text in (
        ("add-node", _local_add, "add a node and rebalance onto it"),
        ("remove-node", _local_remove, "move data off a node, then stop it"),
    ):
        p = local_sub.add_parser(name, help=text)
        p.add_argument("--data-dir", default=".ringkv")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--timeout", type=float, default=1800.0)
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "remove-node":
            p.add_argument("--id", default=None, help="the node to remove (default: the newest)")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RingkvError as exc:
        print(f"ringkv: {exc}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as exc:
        print(f"ringkv: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
