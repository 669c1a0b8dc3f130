from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from nodeproc import NodeProcess


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
