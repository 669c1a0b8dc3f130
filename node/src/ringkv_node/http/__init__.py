"""The node's HTTP front: the fast lane, the aiohttp routes, request parsing.

`frontdoor` listens and answers key routes itself (parser `http1`),
handing other connections to aiohttp; `dataplane` is the key routes' logic
both shells call; `api` assembles every route (`admin_api`, `internal_api`,
`backup_api`); `parsing` checks what requests carry; `appkeys` types the
application's state. Domain errors from below become JSON errors here.
"""

from ringkv_node.http.api import routes
from ringkv_node.http.appkeys import KV_KEY, METRICS_KEY, NODE_KEY, SETTINGS_KEY
from ringkv_node.http.frontdoor import FrontDoor, FrontSite

__all__ = ["KV_KEY", "METRICS_KEY", "NODE_KEY", "SETTINGS_KEY", "FrontDoor", "FrontSite", "routes"]
