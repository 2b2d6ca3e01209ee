"""Small helpers for tests: waiting on the real database instead of sleeping blindly."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from bot.actors.conversation import Reload
from bot.persistence import Repositories
from bot.persistence.conversations import Conversation
from bot.web.keys import REGISTRY, REPOS


def repos_of(client: TestClient) -> Repositories:
    """The repositories of the app under test."""
    return client.app[REPOS]  # type: ignore[index]


async def wait_until(check: Callable[[], Awaitable[Any] | Any], *, timeout: float = 10.0,
                     what: str = "condition") -> Any:
    """Re-check a condition (a plain or an async callable) until it is truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def inbox_statuses(client: TestClient) -> dict[str, str]:
    """wamid → inbox status."""
    rows = await repos_of(client).db.fetch("SELECT wamid, status FROM inbox ORDER BY id")
    return {r["wamid"]: r["status"] for r in rows}


async def wait_handled(client: TestClient, count: int, *, timeout: float = 10.0) -> dict[str, str]:
    """Wait until `count` inbox rows have left 'pending' and nothing is left to send.

    The actor commits a turn first and sends after it: a test that looks at what Meta received
    must also wait for the outbox to settle.
    """
    repos = repos_of(client)

    async def check() -> dict[str, str] | None:
        statuses = await inbox_statuses(client)
        done = [s for s in statuses.values() if s != "pending"]
        if len(done) < count:
            return None
        busy = await repos.db.fetchval("SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending')")
        return statuses if not busy else None

    result: dict[str, str] = await wait_until(check, timeout=timeout, what=f"{count} handled inbox rows")
    return result


async def wait_conversation(client: TestClient, check: Callable[[Conversation], bool], what: str,
                            ident: str | None = None, *, timeout: float = 10.0) -> Conversation:
    """Wait until the (only, or the named) stored conversation satisfies `check`: its actor writes asynchronously."""

    async def current() -> Conversation | None:
        repos = repos_of(client)
        if ident is not None:
            conv = await repos.conversations.find(ident)
        else:
            row = await repos.db.fetchrow("SELECT * FROM conversations ORDER BY id LIMIT 1")
            conv = None if row is None else Conversation.from_row(row)
        return conv if conv is not None and check(conv) else None

    result: Conversation = await wait_until(current, timeout=timeout, what=what)
    return result


async def wait_sent(client: TestClient, count: int, *, timeout: float = 10.0) -> list[Any]:
    """Wait until `count` outbox rows have left queued/sending (the actor records a send after Graph answers)."""

    async def check() -> list[Any] | None:
        rows = await repos_of(client).db.fetch(
            "SELECT * FROM outbox WHERE status NOT IN ('queued', 'sending') ORDER BY id")
        return rows if len(rows) >= count else None

    result: list[Any] = await wait_until(check, timeout=timeout, what=f"{count} sends recorded")
    return result


def reload_actors(client: TestClient) -> None:
    """After a test writes the database behind the actors' backs: make live actors read it again."""
    client.app[REGISTRY].tell_all(Reload())  # type: ignore[index]


async def sign_in(client: TestClient, username: str = "admin", password: str = "test-admin-password") -> str:
    """Sign in through the real login form; returns the session's CSRF token (from a page's meta tag)."""
    import re

    page = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token is not None, "the login page has no CSRF field"
    resp = await client.post("/login", data={"username": username, "password": password,
                                             "csrf_token": token.group(1), "next": "/inbox"},
                             allow_redirects=False)
    assert resp.status == 303, await resp.text()
    inbox = await client.get("/inbox")
    assert inbox.status == 200
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)"', await inbox.text())
    assert meta is not None
    return meta.group(1)


async def raw_http(client: TestClient, data: bytes, *, timeout: float = 10.0) -> int | None:
    """Send bytes as they are (headers no HTTP client would write) and return the answer's status,
    or None when the server closed the connection without one."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            status_line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    parts = status_line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
