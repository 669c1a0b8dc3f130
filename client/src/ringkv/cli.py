"""The `ringkv` command line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _local_up(args: argparse.Namespace) -> int:
    import os

    from ringkv.local import LocalCluster, cluster_token, plan_nodes

    token = cluster_token(args.data_dir, args.token)
    extra = ["--token", token, "--data-auth", "on" if args.auth else "off"]
    if args.durability:
        extra += ["--durability", args.durability]
    nodes = plan_nodes(args.nodes, args.host, args.port, args.data_dir)
    cluster = LocalCluster(nodes, extra, token_path=os.path.join(args.data_dir, "token"))
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
    up.add_argument("--token", default=None, help="cluster token (default: DATA_DIR/token)")
    up.add_argument(
        "--auth",
        action="store_true",
        help="require the token on data routes too (admin/internal routes always need it)",
    )
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
