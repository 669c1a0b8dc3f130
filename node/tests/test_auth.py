"""Token auth: data routes need it when set; admin/internal routes always do."""

from __future__ import annotations

import aiohttp
import pytest

from nodeproc import NodeProcess

pytestmark = pytest.mark.cluster

GOOD = {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Basic czNjcmV0"}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong"}, 403, "forbidden"),
        ({"Authorization": "Bearer"}, 401, "unauthorized"),
        ({"Authorization": "Bearer s3cre"}, 403, "forbidden"),
    ],
)
async def test_data_routes_refuse_without_token(
    token_node: NodeProcess,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    for method, path in [
        ("PUT", "/v1/kv/a"),
        ("GET", "/v1/kv/a"),
        ("DELETE", "/v1/kv/a"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/batch"),
        ("GET", "/v1/status"),
        ("GET", "/v1/ring"),
        ("GET", "/admin/v1/anything"),
        ("GET", "/internal/v1/anything"),
    ]:
        async with http.request(method, token_node.url + path, headers=headers, data=b"x") as r:
            assert r.status == status, (method, path)
            assert (await r.json())["error"] == code


async def test_token_lets_data_through(
    token_node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    async with http.put(f"{token_node.url}/v1/kv/a", data=b"1", headers=GOOD) as r:
        assert r.status == 201
    async with http.get(f"{token_node.url}/v1/kv/a", headers=GOOD) as r:
        assert await r.read() == b"1"


async def test_probes_need_no_token(token_node: NodeProcess, http: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        async with http.get(token_node.url + path) as r:
            assert r.status == 200, path


async def test_without_token_data_is_open_but_admin_is_not(
    node: NodeProcess, http: aiohttp.ClientSession
) -> None:
    async with http.put(f"{node.url}/v1/kv/a", data=b"1") as r:
        assert r.status == 201
    for path in ("/admin/v1/ring", "/internal/v1/ping"):
        async with http.get(node.url + path, headers=GOOD) as r:
            assert r.status == 403
            assert "token" in (await r.json())["message"]
