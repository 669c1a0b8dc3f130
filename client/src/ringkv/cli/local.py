"""`ringkv local up / add-node / remove-node`: the CLI side of `ringkv.local`.

`up` checks before it starts anything (the directory's lock, nodes left
running, ports) and refuses with what it found; `add-node` and
`remove-node` refuse what would break the cluster before anything stops,
and say what each rebalance step does while it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ringkv.cli.common import NoBar, duration_text, positive_float, positive_int, progress

__all__ = ["add_commands"]


def _up(args: argparse.Namespace) -> int:
    from ringkv import dirlock
    from ringkv.local import (
        LocalCluster,
        cluster_token,
        load_manifest,
        plan_nodes,
        preflight,
        save_manifest,
        token_path,
    )

    data_dir = args.data_dir
    try:
        lock = dirlock.acquire(data_dir)
    except dirlock.DirLockedError as exc:
        pid = exc.pid or "?"
        raise ValueError(
            f"a local cluster is already running in {data_dir} (`ringkv local up`, pid {pid}): "
            f"use it, or stop it first (Ctrl-C in its terminal, or kill {pid})"
        ) from None
    try:
        manifest = load_manifest(data_dir)
        if manifest is None:
            if args.replication_factor is not None and args.replication_factor > args.nodes:
                raise ValueError(
                    f"--replication-factor {args.replication_factor} exceeds --nodes {args.nodes}"
                )
            if args.port + args.nodes - 1 > 65535:
                raise ValueError(
                    f"--port {args.port} with --nodes {args.nodes} needs ports past 65535"
                )
            nodes = plan_nodes(args.nodes, args.host, args.port, data_dir)
        else:
            print(f"ringkv: using the nodes in {data_dir}/cluster.json", file=sys.stderr)
            from ringkv.local import active

            nodes = active(manifest, args.host, data_dir)
        problems = preflight(data_dir, nodes)
        if problems:
            raise ValueError(
                f"cannot start the local cluster in {data_dir}:\n  "
                + "\n  ".join(problems)
                + "\n(another `--port` or `--data-dir` starts a second cluster beside it)"
            )
        if manifest is None:
            save_manifest(data_dir, [{"id": n.id, "port": n.port} for n in nodes])
        cluster_token(data_dir, args.token)
        extra = ["--token-file", os.path.abspath(token_path(data_dir))]
        extra += ["--data-auth", "on" if args.auth else "off"]
        if args.durability:
            extra += ["--durability", args.durability]
        if args.drop_delay:
            extra += ["--drop-delay", args.drop_delay]
        if args.replication_factor is not None:
            extra += ["--replication-factor", str(args.replication_factor)]
        return LocalCluster(data_dir, args.host, extra, auth=args.auth).up()
    finally:
        lock.release()


def _rebalance_to(args: argparse.Namespace, members: list[Any], seed: str) -> Any:
    from ringkv.admin import Rebalancer
    from ringkv.local import cluster_token

    bar = progress(None, "rebalance", not args.quiet, unit="partition")
    last = [""]

    def on_progress(step: Any, docs: dict[str, Any]) -> None:
        total = sum(d.get("partitions_to_stream", 0) for d in docs.values())
        done = sum(d.get("partitions_streamed", 0) for d in docs.values())
        if isinstance(bar, NoBar):
            copied = (
                f" ({done}/{total} partitions copied)" if step.action in ("stream", "wait") else ""
            )
            line = f"{step.action}: {step.reason}{copied if total else ''}"
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


def _manifest(args: argparse.Namespace) -> list[dict[str, Any]]:
    from ringkv import dirlock
    from ringkv.local import load_manifest

    nodes = load_manifest(args.data_dir)
    if nodes is None:
        raise ValueError(f"no local cluster in {args.data_dir}: run `ringkv local up` first")
    if dirlock.holder(args.data_dir) is None:
        raise ValueError(
            f"no `ringkv local up` is running in {args.data_dir}: start it first "
            "(it starts and stops the nodes this changes)"
        )
    return nodes


def _add(args: argparse.Namespace) -> int:
    from ringkv.local import LocalNode, active, port_user, save_manifest, wait_ready
    from ringkv.ring import Member

    nodes = _manifest(args)
    joining = [n for n in nodes if n.get("state") == "joining"]
    if joining:  # a previous add-node stopped half way: finish it
        new = joining[0]
    else:
        number = 1 + max(int(n["id"].rsplit("-", 1)[1]) for n in nodes)
        new = {"id": f"node-{number}", "port": max(n["port"] for n in nodes) + 1}
        user = port_user(args.host, new["port"])
        if user is not None:
            raise ValueError(f"port {new['port']} for {new['id']} is in use by {user}")
        nodes.append(new)
    new["state"] = "joining"  # running, but not yet given partitions
    save_manifest(args.data_dir, nodes)
    members: list[LocalNode] = active(nodes, args.host, args.data_dir)
    url = next(m.url for m in members if m.id == new["id"])
    if not wait_ready(url, 60):
        log = os.path.join(args.data_dir, new["id"], "node.log")
        raise ValueError(f"{new['id']} did not start; see {log}")
    seed = next(m.url for m in members if m.id != new["id"])
    ring = _rebalance_to(args, [Member(m.id, m.url) for m in members], seed)
    new["state"] = "active"
    save_manifest(args.data_dir, nodes)
    print(f"{new['id']} joined at {url}: ring epoch {ring.epoch}, {len(members)} nodes")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from ringkv.admin import Rebalancer
    from ringkv.local import active, cluster_token, save_manifest
    from ringkv.rebalance import refusal
    from ringkv.ring import Member

    nodes = _manifest(args)
    members = active(nodes, args.host, args.data_dir)
    victim = args.id or members[-1].id
    if victim not in {m.id for m in members}:
        raise ValueError(f"{victim} is not an active node of this cluster")
    keep = [m for m in members if m.id != victim]
    if not keep:
        raise ValueError("cannot remove the last node")
    target = [Member(m.id, m.url) for m in keep]
    with Rebalancer(cluster_token(args.data_dir, None)) as rb:
        current = rb.ring(keep[0].url)
    reason = refusal(current, target)
    if reason is not None:  # before anything stops: nothing has changed
        raise ValueError(
            f"cannot remove {victim}: {reason}. Add a node first (`ringkv local add-node`), "
            f"or run a cluster with a lower N (`ringkv local up --replication-factor "
            f"{len(keep)}` on another --data-dir, then dump and load)"
        )
    ring = _rebalance_to(args, target, keep[0].url)
    gone = next(m for m in members if m.id == victim)
    for n in nodes:
        if n["id"] == victim:
            n["state"] = "removed"
    save_manifest(args.data_dir, nodes)
    print(f"{victim} decommissioned: ring epoch {ring.epoch}, {len(keep)} nodes")
    print(
        f"`ringkv local up` stops {victim} now. Its directory {gone.data_dir} is left as it "
        "was: the other nodes hold all of its data, so delete it when you like (a later "
        "add-node starts a new node in a new directory)."
    )
    return 0


def add_commands(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """`ringkv local ...` under the `ringkv` parser's subcommands."""
    local = sub.add_parser(
        "local", help="run a cluster of node processes on this machine", formatter_class=formatter
    )
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    up = local_sub.add_parser(
        "up",
        help="start and supervise a local cluster (refuses a directory or port in use)",
        formatter_class=formatter,
    )
    up.add_argument("--nodes", type=positive_int, default=3, help="how many nodes")
    up.add_argument("--port", type=positive_int, default=7100, help="first node's port")
    up.add_argument("--host", default="127.0.0.1", help="address the nodes listen on")
    up.add_argument("--data-dir", default=".ringkv", help="the cluster's directory")
    up.add_argument(
        "--token",
        default=None,
        help="cluster token, kept in DATA_DIR/token (default: the one kept there, or a new one)",
    )
    up.add_argument(
        "--auth",
        action="store_true",
        help="require the token on data routes too (admin/internal routes always need it)",
    )
    up.add_argument(
        "--replication-factor",
        type=positive_int,
        default=None,
        help="N, for a new cluster's first ring (default: min(3, nodes))",
    )
    up.add_argument("--durability", choices=["fsync", "async"], default=None, help="default: fsync")
    up.add_argument(
        "--drop-delay",
        type=duration_text,
        default=None,
        help="keep moved-away partitions this long, like 500ms, 10s or 5m (default: 60s)",
    )
    up.set_defaults(func=_up)
    for name, func, text in (
        ("add-node", _add, "add a node and rebalance onto it"),
        ("remove-node", _remove, "move data off a node, then stop it (refused below N nodes)"),
    ):
        p = local_sub.add_parser(name, help=text, description=text, formatter_class=formatter)
        p.add_argument("--data-dir", default=".ringkv", help="the cluster's directory")
        p.add_argument("--host", default="127.0.0.1", help="address the nodes listen on")
        p.add_argument(
            "--timeout", type=positive_float, default=1800.0, help="give up after this many seconds"
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "remove-node":
            p.add_argument("--id", default=None, help="the node to remove (default: the newest)")
        p.set_defaults(func=func)
