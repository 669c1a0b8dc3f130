"""The `ringkv` command line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _local_up(args: argparse.Namespace) -> int:
    from ringkv.local import LocalCluster, plan_nodes

    extra = []
    if args.token:
        extra += ["--token", args.token]
    if args.durability:
        extra += ["--durability", args.durability]
    cluster = LocalCluster(plan_nodes(args.nodes, args.host, args.port, args.data_dir), extra)
    return cluster.up()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringkv", description="ringkv command line")
    sub = parser.add_subparsers(dest="command", required=True)
    local = sub.add_parser("local", help="run a cluster of node processes on this machine")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    up = local_sub.add_parser("up", help="start and supervise a local cluster")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--port", type=int, default=7100, help="first node's port")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--data-dir", default=".ringkv")
    up.add_argument("--token", default=None)
    up.add_argument("--durability", choices=["fsync", "async"], default=None)
    up.set_defaults(func=_local_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"ringkv: {exc}", file=sys.stderr)
        return 2
