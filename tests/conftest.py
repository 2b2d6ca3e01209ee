"""Shared fixtures: the fakes on loopback, a Config pointing at them, and the real app under test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from bot.app import build_app
from bot.config import Config
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import sign
from tests.fakes.openai_server import FakeOpenAI
from tests.leaks import leaked, request_texts

APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
WA_TOKEN = "wa-test-token"
API_TOKEN = "test-api-token"
PHONE_NUMBER_ID = "100000000000001"

ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """A fake OpenAI server that the real SDK talks to."""
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def fake_graph() -> AsyncIterator[FakeGraph]:
    """A fake WhatsApp Graph API."""
    async with FakeGraph() as fake:
        yield fake


def make_config(tmp_path: Path, fake_openai: FakeOpenAI, fake_graph: FakeGraph, **overrides: Any) -> Config:
    """A Config for tests: real SQLite under tmp_path, fakes for OpenAI and Meta, fast retries."""
    base = Config(
        data_dir=tmp_path / "data",
        openai_api_key="sk-test",
        openai_base_url=fake_openai.base_url,
        whatsapp_access_token=WA_TOKEN,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_api_base=fake_graph.base_url,
        whatsapp_phone_number_id=PHONE_NUMBER_ID,
        burst_window_ms=0,
        retry_base_seconds=0.01,
        retry_max_seconds=0.05,
        retry_budget_seconds=0,
        openai_timeout_seconds=5,
        graph_timeout_seconds=5,
        client_name="Bottega Test",
        api_token=API_TOKEN,
        admin_password="test-admin-password",
    )
    return base.with_overrides(**overrides)


@pytest.fixture
def config(tmp_path: Path, fake_openai: FakeOpenAI, fake_graph: FakeGraph) -> Config:
    """The default test configuration."""
    return make_config(tmp_path, fake_openai, fake_graph)


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    fake_graph: FakeGraph,
) -> ClientFactory:
    """Build the real app with config overrides and serve it on loopback."""

    async def factory(**overrides: Any) -> TestClient:
        app = build_app(make_config(tmp_path, fake_openai, fake_graph, **overrides))
        return await aiohttp_client(app)

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    """The app with the default test configuration."""
    return await make_client()


async def post_webhook(client: TestClient, payload: dict[str, Any] | bytes, *, secret: str = APP_SECRET) -> Any:
    """POST a signed webhook body exactly as Meta would (compact JSON, signature over the raw bytes)."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return await client.post(
        "/webhooks/whatsapp",
        data=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)},
    )


@pytest.fixture(autouse=True)
def _no_customer_number_reaches_openai(request: pytest.FixtureRequest) -> Iterator[None]:
    """Across the whole suite: no customer's number, in any script or format, and no run of its last 7
    or more digits, in any request to the fake OpenAI (tests/leaks.py says what counts)."""
    if not {"fake_openai", "fake_graph"} <= set(request.fixturenames):
        yield
        return
    # Fetched before the test runs: afterwards the fakes are already torn down.
    fake_openai: FakeOpenAI = request.getfixturevalue("fake_openai")
    fake_graph: FakeGraph = request.getfixturevalue("fake_graph")
    yield
    numbers = {str(m.get("to")) for m in fake_graph.sent if m.get("to")}
    found = leaked(request_texts(fake_openai.requests), (n for n in numbers if len(n) >= 9))
    assert not found, f"customer numbers reached OpenAI: {found}"
