"""Typed keys for what the aiohttp application holds (STYLE §5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ringkv_node.metrics import Metrics
from ringkv_node.settings import Settings

if TYPE_CHECKING:
    from ringkv_node.cluster.node import Node
    from ringkv_node.replica.kv import KV

__all__ = ["KV_KEY", "METRICS_KEY", "NODE_KEY", "SETTINGS_KEY"]

SETTINGS_KEY = web.AppKey("settings", Settings)
METRICS_KEY = web.AppKey("metrics", Metrics)
KV_KEY: web.AppKey[KV] = web.AppKey("kv")
NODE_KEY: web.AppKey[Node] = web.AppKey("node")
