"""What only the PostgreSQL backend does: migrations raced by several processes, its errors mapped to the
interface's, reconnecting, and the webhook's 503 when the server is unreachable or refuses writes.

Skipped in the SQLite half of the suite (it needs BOT_TEST_DATABASE_URL; `make test` sets it).
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from bot.persistence.database import Database, DatabaseUnavailable, Stmt
from bot.persistence.migrations import load_migrations
from bot.persistence.postgres import PostgresDatabase, redact_url
from tests.backend import database_for, fresh_database_url, proxied_url
from tests.conftest import ClientFactory, post_webhook
from tests.fakes.graph_server import FakeGraph
from tests.fakes.meta import text_message
from tests.fakes.tcp_proxy import TcpProxy
from tests.helpers import repos_of, wait_handled, wait_until

pytestmark = pytest.mark.postgres_only
ERROR = "INSERT INTO errors (type, message, created_at) VALUES ($1, $2, $3)"
PHONE = "393331112233"
VERSIONS = [number for number, _ in load_migrations("postgres")]


def test_every_sqlite_migration_has_its_postgres_twin() -> None:
    sqlite = [number for number, _ in load_migrations("sqlite")]
    assert sqlite == VERSIONS == list(range(1, len(VERSIONS) + 1))


async def test_two_processes_migrating_one_empty_schema_apply_each_migration_once(tmp_path: Path) -> None:
    url = fresh_database_url(tmp_path)
    first, second = Database.create(url), Database.create(url)
    # Both connect first, then race: the advisory lock lets one apply everything, the other nothing.
    await asyncio.gather(first.open(migrate=False), second.open(migrate=False))
    try:
        assert first.applied_migrations == second.applied_migrations == []
        applied = await asyncio.gather(first.migrate(), second.migrate())
        assert sorted(applied) == [[], VERSIONS]
        assert first.applied_migrations == second.applied_migrations == VERSIONS
        assert await first.fetchval("SELECT COUNT(*) FROM schema_migrations") == len(VERSIONS)
        assert await first.migrate() == []
    finally:
        await asyncio.gather(first.close(), second.close())
    # And two servers starting at once on an empty schema: both come up, migrated once.
    url = fresh_database_url(tmp_path)
    servers = [Database.create(url) for _ in range(3)]
    await asyncio.gather(*(db.open() for db in servers))
    try:
        assert all(db.applied_migrations == VERSIONS for db in servers)
        assert await servers[0].fetchval("SELECT COUNT(*) FROM schema_migrations") == len(VERSIONS)
    finally:
        await asyncio.gather(*(db.close() for db in servers))


async def test_open_without_migrating_leaves_an_empty_schema_alone(tmp_path: Path) -> None:
    db = Database.create(fresh_database_url(tmp_path))
    await db.open(migrate=False)
    try:
        assert db.applied_migrations == []
        tables = await db.fetchval("SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()")
        assert tables == 0
    finally:
        await db.close()


async def test_a_lock_held_elsewhere_makes_writes_unavailable_not_stuck(tmp_path: Path) -> None:
    url = fresh_database_url(tmp_path)
    db = Database.create(url + "&lock_timeout=300")  # the URL's setting wins over the 5 s default
    await db.open()
    other = await asyncpg.connect(url)
    try:
        await other.execute("BEGIN; LOCK TABLE errors IN EXCLUSIVE MODE")
        started = time.monotonic()
        outcomes = await asyncio.gather(
            db.write([Stmt(ERROR, ("locked", "x", 1.0))]),
            db.write([Stmt("INSERT INTO orphan_statuses (wamid, status, received_at) VALUES ('w', 's', 0)")]),
            return_exceptions=True)
        assert isinstance(outcomes[0], DatabaseUnavailable) and "LockNotAvailable" in str(outcomes[0])
        assert outcomes[1] == [1]  # the other unit of the group did not wait for that table
        assert time.monotonic() - started < 3
        assert await db.fetchval("SELECT COUNT(*) FROM errors") == 0  # reads go on meanwhile
        await other.execute("ROLLBACK")
        assert await db.write([Stmt(ERROR, ("unlocked", "x", 1.0))]) == [1]
    finally:
        await other.close()
        await db.close()


async def test_the_writer_reconnects_after_its_connection_is_killed(tmp_path: Path) -> None:
    db = Database.create(fresh_database_url(tmp_path))
    assert isinstance(db, PostgresDatabase)
    await db.open()
    admin = await asyncpg.connect(db.url)
    try:
        [[row]] = await db.write([Stmt("SELECT pg_backend_pid(), current_setting('application_name')", rows=True)])
        assert row[1] == f"bot writer {os.getpid()}"  # pg_stat_activity tells the writer from the pool, and whose
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", row[0])  # SQLSTATE 57P01, admin_shutdown
        failures = 0
        for attempt in range(5):
            try:
                await db.execute(ERROR, "after", str(attempt), 1.0)
                break
            except DatabaseUnavailable:
                failures += 1  # the loss surfaces once at most: the next group reconnects
        assert failures <= 1
        assert await db.fetchval("SELECT COUNT(*) FROM errors WHERE type = 'after'") == 1
    finally:
        await admin.close()
        await db.close()


async def test_an_unreachable_server_is_a_clear_unavailable_error(unused_tcp_port: int) -> None:
    db = Database.create(f"postgresql://bot:s3cret-pw@127.0.0.1:{unused_tcp_port}/bot")
    assert db.description == f"postgresql://bot@127.0.0.1:{unused_tcp_port}/bot"  # no password
    with pytest.raises(DatabaseUnavailable) as caught:
        await db.open()
    assert f"127.0.0.1:{unused_tcp_port}" in str(caught.value) and "s3cret-pw" not in str(caught.value)
    with pytest.raises(DatabaseUnavailable):
        await db.fetch("SELECT 1")
    with pytest.raises(DatabaseUnavailable):
        await db.write([Stmt("SELECT 1")])
    assert redact_url("postgresql://u:p@h/d?search_path=x") == "postgresql://u@h/d?search_path=x"


async def test_text_with_nul_is_stored_with_a_replacement_character(tmp_path: Path) -> None:
    db = Database.create(fresh_database_url(tmp_path))
    await db.open()
    try:
        await db.execute(ERROR, "nul", "a\x00b", 1.0)  # PostgreSQL text cannot hold NUL
        assert await db.fetchval("SELECT message FROM errors") == "a\ufffdb"
        assert await db.fetchval("SELECT message FROM errors WHERE message = $1", "a\x00b") == "a\ufffdb"
    finally:
        await db.close()


async def test_webhooks_get_503_while_postgres_is_unreachable_and_nothing_acknowledged_is_lost(
    make_client: ClientFactory, fake_graph: FakeGraph, tmp_path: Path
) -> None:
    base = database_for(tmp_path / "data")  # the schema make_config gives this test's data directory
    async with TcpProxy("127.0.0.1", urllib.parse.urlsplit(base).port or 5432) as proxy:
        client = await make_client(database=proxied_url(base, proxy.port))
        assert (await post_webhook(client, text_message("wamid.UP1", PHONE, "prima domanda"))).status == 200
        await fake_graph.wait_for_sent(1)
        await wait_handled(client, 1)

        proxy.cut()
        resp = await post_webhook(client, text_message("wamid.DOWN1", PHONE, "durante il guasto"))
        assert resp.status == 503 and "retry" in (await resp.json())["error"]
        assert (await post_webhook(client, text_message("wamid.DOWN1", PHONE, "durante il guasto"))).status == 503
        assert proxy.refused > 0  # the writer tried to reconnect, and could not

        proxy.restore()
        # Meta redelivers until it gets a 200: stored once, and the first message intact.
        assert (await post_webhook(client, text_message("wamid.DOWN1", PHONE, "durante il guasto"))).status == 200
        # The cut also closed the connection that held this process's conversation locks: another
        # process may have taken them since, so this one answers nothing more, says so, and restarts.
        health = await client.get("/healthz")
        assert health.status == 503 and "locks" in " ".join((await health.json())["reasons"])
        restarted = await make_client(database=base)  # as systemd's Restart=always would
        statuses = await wait_handled(restarted, 2)
        assert statuses == {"wamid.UP1": "done", "wamid.DOWN1": "done"}
        await fake_graph.wait_for_sent(2)
        assert fake_graph.texts() == ["Echo: prima domanda", "Echo: durante il guasto"]


async def test_webhooks_get_503_while_postgres_refuses_writes(client: TestClient, fake_graph: FakeGraph) -> None:
    # A server that refuses writes for a while (a full disk, a standby after failover): every statement of
    # the writer fails with the server's own error until it is over.
    from tests.reliability.harness import StatementFaults

    faults = StatementFaults()
    await faults.install(repos_of(client))
    faults.fail("insert", times=1_000_000)
    resp = await post_webhook(client, text_message("wamid.RO1", PHONE, "ci siete?"))
    assert resp.status == 503
    assert await repos_of(client).db.fetchval("SELECT COUNT(*) FROM inbox") == 0
    await asyncio.to_thread(faults.clear)
    assert (await post_webhook(client, text_message("wamid.RO1", PHONE, "ci siete?"))).status == 200
    await fake_graph.wait_for_sent(1)

    async def answered_once() -> bool:
        return fake_graph.texts() == ["Echo: ci siete?"]

    await wait_until(answered_once, what="one answer")
