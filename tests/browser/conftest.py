"""The browser tests' Chromium: Debian's, headless, driven through playwright's async API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import Application

from bot.app import build_app
from tests.conftest import make_config
from tests.fakes.graph_server import FakeGraph
from tests.fakes.openai_server import FakeOpenAI

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (the sync API cannot run inside the test's event loop)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def server(
    aiohttp_server: Callable[[Application], Awaitable[TestServer]],
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    fake_graph: FakeGraph,
) -> TestServer:
    """The real app on a real loopback port."""
    return await aiohttp_server(build_app(make_config(tmp_path, fake_openai, fake_graph)))


# Up to 10 s where playwright's default is 5 s: under pytest-xdist, Chromium shares two cores with the
# other workers.
from playwright.async_api import expect  # noqa: E402

expect.set_options(timeout=10_000)
