"""Shared fixtures: the fakes on loopback, a Config pointing at them, and the real app under test.

The suite runs on SQLite (the default) or, with BOT_TEST_DATABASE_URL=postgresql://…, on PostgreSQL:
every data directory a test uses then gets a schema of its own (tests/backend.py). Tests that can
only run on SQLite carry `@pytest.mark.sqlite_only("why")` and are skipped, with that reason, on
PostgreSQL. When the server cannot be reached, the whole PostgreSQL run is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from bot.app import build_app
from bot.configuration.config import Config
from bot.persistence.postgres import redact_url
from bot.web import access as access_module
from tests import backend
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


def pytest_configure(config: pytest.Config) -> None:
    """Connect to the PostgreSQL of BOT_TEST_DATABASE_URL, if set (once per worker process)."""
    config.addinivalue_line("markers", "sqlite_only(reason): the test needs the SQLite backend (skipped on "
                                       "PostgreSQL with the reason)")
    config.addinivalue_line("markers", "postgres_only: the test is about the PostgreSQL backend (skipped on SQLite)")
    config.addinivalue_line("markers", "one_backend(reason): runs in the SQLite half only, though it uses a database")
    config.addinivalue_line("markers", "no_database: the test never opens a database, so the PostgreSQL half "
                                       "leaves it to the SQLite half (checked: asking for one fails the test)")
    url = os.environ.get(backend.ENV, "").strip()
    config.stash[_POSTGRES_DOWN] = None
    if not url:
        return
    problem = asyncio.run(backend.probe(url))
    if problem is not None:
        config.stash[_POSTGRES_DOWN] = f"PostgreSQL at {redact_url(url)} is unreachable ({problem}): " \
                                       "the PostgreSQL half of the suite is skipped"
        return
    schemas = backend.PostgresSchemas(url)
    schemas.prepare()
    backend.install(schemas)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the admin connection."""
    schemas = backend.postgres()
    if schemas is not None:
        backend.install(None)
        schemas.close()


def pytest_report_header(config: pytest.Config) -> str:
    """Say which backend this run tests."""
    down = config.stash.get(_POSTGRES_DOWN, None)
    if down:
        return f"database: {down}"
    schemas = backend.postgres()
    return f"database: PostgreSQL ({redact_url(schemas.url)})" if schemas else "database: SQLite"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say it loudly when the PostgreSQL half could not run."""
    down = config.stash.get(_POSTGRES_DOWN, None)
    if down:
        terminalreporter.write_sep("!", down, yellow=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, skip the SQLite-only tests (or everything, when the server is unreachable)."""
    down = config.stash.get(_POSTGRES_DOWN, None)
    if down:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=down))
        return
    if backend.postgres() is None:
        for item in items:
            if item.get_closest_marker("postgres_only") is not None:
                item.add_marker(pytest.mark.skip(reason=f"PostgreSQL only: set {backend.ENV}=postgresql://… "
                                                        "(make test does)"))
        return
    # Nothing in these depends on the backend: they ran in the SQLite half. (Browser tests check pages;
    # every route and query under them runs in both halves through the HTTP tests. Run twice, they
    # alone would take the suite past its five minutes on two cores.)
    kept = [item for item in items
            if item.get_closest_marker("no_database") is None and item.get_closest_marker("one_backend") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            why = marker.args[0] if marker.args else "it needs SQLite"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {why}"))


_REAL_HASH, _REAL_VERIFY = access_module.hash_password, access_module.verify_password
_hashes: dict[str, str] = {}
_verified: set[tuple[str, str]] = set()


def _hash_once(password: str) -> str:
    # Every app a test builds creates its admin: one real scrypt hash per password per worker, not one
    # per app (0.1 s of CPU each, about a third of the suite's CPU otherwise). Still a real hash.
    if password not in _hashes:
        _hashes[password] = _REAL_HASH(password)
    return _hashes[password]


def _verify_once(password: str, stored: str) -> bool:
    # A right password is checked for real once per hash; every wrong one, every time.
    if (password, stored) in _verified:
        return True
    ok = _REAL_VERIFY(password, stored)
    if ok:
        _verified.add((password, stored))
    return ok


@pytest.fixture(autouse=True)
def _scrypt_once_per_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's admin and sign-ins reuse real scrypt results (tests of the hash itself import the originals)."""
    monkeypatch.setattr(access_module, "hash_password", _hash_once)
    monkeypatch.setattr(access_module, "verify_password", _verify_once)


@pytest.fixture(autouse=True)
def _test_databases(request: pytest.FixtureRequest) -> Iterator[None]:
    """Take back the PostgreSQL schemas a test used, once everything of it has closed (autouse: torn down last).

    A test marked `no_database` that asked for a database fails: it would have been left out of the
    PostgreSQL half.
    """
    backend.reset_used()
    yield
    schemas = backend.postgres()
    if schemas is not None:
        schemas.release_all()
    if backend.used() and request.node.get_closest_marker("no_database") is not None:
        pytest.fail("marked no_database, but it asked for a database: remove the marker so that it runs on "
                    "PostgreSQL too")


_POSTGRES_DOWN = pytest.StashKey[str | None]()


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
    """A Config for tests: the test database (SQLite under tmp_path, or PostgreSQL), fakes, fast retries."""
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
    if "database" not in overrides:  # database="" asks for SQLite in the data dir, whatever the half
        overrides["database"] = backend.database_for(Path(overrides.get("data_dir", tmp_path / "data")))
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
