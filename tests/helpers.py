"""Small helpers for tests: waiting on the real database instead of sleeping blindly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from bot.persistence import Repositories
from bot.web.keys import REPOS


def repos_of(client: TestClient) -> Repositories:
    """The repositories of the app under test."""
    return client.app[REPOS]  # type: ignore[index]


async def wait_until(check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Re-check an async condition until it is truthy; fail loudly with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def inbox_statuses(client: TestClient) -> dict[str, str]:
    """wamid → inbox status."""
    rows = await repos_of(client).db.fetchall("SELECT wamid, status FROM inbox ORDER BY id")
    return {r["wamid"]: r["status"] for r in rows}


async def wait_handled(client: TestClient, count: int, *, timeout: float = 10.0) -> dict[str, str]:
    """Wait until `count` inbox rows have left 'pending'."""

    async def check() -> dict[str, str] | None:
        statuses = await inbox_statuses(client)
        done = [s for s in statuses.values() if s != "pending"]
        return statuses if len(done) >= count else None

    result: dict[str, str] = await wait_until(check, timeout=timeout, what=f"{count} handled inbox rows")
    return result


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
