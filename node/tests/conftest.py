from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from fakenet import FakeNetwork, build
from nodeproc import NodeProcess


@pytest.fixture
def net(tmp_path: Path) -> Iterator[FakeNetwork]:
    """An in-process 3-member cluster over the fake network (`fakenet`)."""
    network, _, _ = build(tmp_path)
    yield network
    for node in network.members.values():
        node.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess("n1", tmp_path)
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture
def token_node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess("n1", tmp_path, extra=["--token", "s3cret"])
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
