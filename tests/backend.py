"""Which database the tests run on: SQLite files under tmp_path, or (BOT_TEST_DATABASE_URL) PostgreSQL.

With `BOT_TEST_DATABASE_URL=postgresql://…` every data directory a test uses gets a schema of its
own on that server, created on first use and dropped when the test ends. The app finds it through
`search_path` in the URL it is given, so `run.py` child processes use it too. Schemas are named
after the machine and the worker process (`bt_<host>_<pid>_<n>`), so parallel workers, and parallel runs,
never meet; a run that was killed leaves schemas whose pid is gone, and the next run drops them.

The schemas are made synchronously, because `make_config` and `Config(...)` are plain functions:
one admin connection lives on an event loop in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import socket
import sqlite3
import threading
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from bot.configuration.config import Config
from bot.persistence.postgres import PostgresDatabase

ENV = "BOT_TEST_DATABASE_URL"
T = TypeVar("T")


def _with_search_path(url: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class _Admin:
    """One admin connection on a private event loop, usable from sync code and from any test's loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-test-admin", daemon=True)
        self._thread.start()
        self._conn: asyncpg.Connection | None = None

    def call(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async def run() -> T:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self.url, timeout=5)
            return await fn(self._conn)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=60)

    def close(self) -> None:
        async def shut() -> None:
            if self._conn is not None:
                await self._conn.close()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class PostgresSchemas:
    """Hands out a schema per data directory of the running test, and takes them back after it.

    Migrating a schema costs about 100 ms, emptying one about 10 ms: a schema the test left as
    migrations made it (same tables, columns, functions and triggers) is emptied (TRUNCATE … RESTART
    IDENTITY, so ids start at 1 again) and handed to the next test of this worker; any other is dropped.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._admin = _Admin(url)
        self._count = 0
        self._current: dict[str, str] = {}  # data dir → schema, for the running test
        self._fresh: set[str] = set()  # schemas made empty on purpose (never reused)
        self._free: list[str] = []  # migrated, emptied schemas ready for the next test
        self._pristine: str | None = None  # the shape of a freshly migrated schema
        self._delete_order: list[str] | None = None  # its tables, children first

    def prepare(self) -> None:
        """Install unaccent once (in public, so dropping a test's schema never drops it) and sweep old schemas."""

        async def run(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                # Two workers creating the extension at once would collide on pg_extension's unique index.
                await conn.execute("SELECT pg_advisory_xact_lock(6451574, 1)")
                await conn.execute("CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public")
            names = [r[0] for r in await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
                                                    f"bt\\_{_HOST}\\_%")]
            for name in names:
                pid = name.split("_")[2]
                if pid.isdigit() and not _alive(int(pid)):
                    # Other workers sweep at the same moment: one of them drops it, the others need not.
                    with contextlib.suppress(asyncpg.PostgresError):
                        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            await conn.execute("SET lock_timeout = '10s'")

        self._admin.call(run)

    def _new_schema(self, *, migrated: bool) -> str:
        self._count += 1
        schema = f"bt_{_HOST}_{os.getpid()}_{self._count}"

        async def create(conn: asyncpg.Connection) -> None:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            if migrated:
                await PostgresDatabase(_with_search_path(self.url, schema)).migrate()
                if self._pristine is None:
                    self._pristine = await _shape(conn, schema)

        self._admin.call(create)
        return schema

    def url_for(self, data_dir: Path) -> str:
        """The URL of this data directory's schema, migrated (the app's own migrate finds nothing to do)."""
        key = str(data_dir.resolve())
        schema = self._current.get(key)
        if schema is None:
            schema = self._free.pop() if self._free else self._new_schema(migrated=True)
            self._current[key] = schema
        return _with_search_path(self.url, schema)

    def fresh_url(self) -> str:
        """An empty schema of its own, not even migrated (for tests of the database itself)."""
        schema = self._new_schema(migrated=False)
        self._fresh.add(schema)
        self._current[f"fresh:{schema}"] = schema
        return _with_search_path(self.url, schema)

    def release_all(self) -> None:
        """Take the running test's schemas back: emptied for reuse when untouched in shape, else dropped."""
        names, self._current = list(self._current.values()), {}
        fresh, self._fresh = self._fresh, set()
        if not names:
            return

        async def reusable(conn: asyncpg.Connection, name: str) -> bool:
            try:
                return name not in fresh and await _shape(conn, name) == self._pristine
            except asyncpg.PostgresError:  # e.g. a test dropped schema_migrations
                return False

        async def release(conn: asyncpg.Connection) -> None:
            for name in names:
                if await reusable(conn, name):
                    if self._delete_order is None:
                        self._delete_order = await _delete_order(conn, name)
                    # DELETE, not TRUNCATE: a few rows in twenty small tables go in a few ms, where
                    # TRUNCATE gives every table and index new files (90 ms). One round trip.
                    await conn.execute("BEGIN; " + "".join(f'DELETE FROM "{name}"."{t}"; ' for t in self._delete_order)
                                       + "SELECT setval(oid, 1, false) FROM pg_class WHERE relkind = 'S' "
                                       f"AND relnamespace = '\"{name}\"'::regnamespace; COMMIT")
                    self._free.append(name)
                else:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

        self._admin.call(release)

    def query(self, url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Run a statement on a test schema from sync code (what `sqlite3.connect` is for the SQLite half)."""
        schema = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["search_path"][0]

        async def run(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            async with conn.transaction():
                await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                return [dict(r) for r in await conn.fetch(sql, *args)]

        return self._admin.call(run)

    def dump(self, url: str, *, skip: tuple[str, ...] = ()) -> str:
        """Every row of every table of a test schema (but `skip`), as text."""
        schema = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["search_path"][0]

        async def run(conn: asyncpg.Connection) -> str:
            tables = [r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
                      if r[0] not in skip]
            lines = []
            for table in tables:
                lines += [r[0] for r in await conn.fetch(f'SELECT CAST(t AS TEXT) FROM "{schema}"."{table}" t')]
            return "\n".join(lines)

        return self._admin.call(run)

    def close(self) -> None:
        """Drop the schemas kept for reuse, and close the admin connection."""
        free, self._free = self._free, []

        async def drop(conn: asyncpg.Connection) -> None:
            for name in free:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

        try:
            self._admin.call(drop)
        finally:
            self._admin.close()


# What a schema holds, without its rows, cheaply: its relations and their columns, functions and
# triggers (counted), and the migrations applied. A test that adds a table, a column, a trigger or a
# function (the statement faults do) changes it.
_SHAPE_SQL = """
SELECT (SELECT COUNT(*) FROM pg_class WHERE relnamespace = $1::regnamespace) || '/' ||
       (SELECT COALESCE(SUM(relnatts), 0) FROM pg_class WHERE relnamespace = $1::regnamespace) || '/' ||
       (SELECT COUNT(*) FROM pg_proc WHERE pronamespace = $1::regnamespace) || '/' ||
       (SELECT COUNT(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = $1::regnamespace AND NOT t.tgisinternal)
"""


async def _shape(conn: asyncpg.Connection, schema: str) -> str:
    """What a schema holds, without its rows (see _SHAPE_SQL)."""
    versions = [str(r[0]) for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')]
    return f"{await conn.fetchval(_SHAPE_SQL, schema)}:{','.join(versions)}"


async def _delete_order(conn: asyncpg.Connection, schema: str) -> list[str]:
    """A migrated schema's tables, children before parents (the order DELETE needs for the foreign keys)."""
    tables = [r[0] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> 'schema_migrations'", schema)]
    edges = [(r[0], r[1]) for r in await conn.fetch(
        "SELECT p.relname, c.relname FROM pg_constraint k JOIN pg_class p ON p.oid = k.confrelid "
        "JOIN pg_class c ON c.oid = k.conrelid WHERE k.contype = 'f' AND k.connamespace = $1::regnamespace", schema)]
    parents = {t: {p for p, c in edges if c == t and p != t} for t in tables}
    ordered: list[str] = []
    while len(ordered) < len(tables):
        ready = [t for t in sorted(tables) if t not in ordered and parents[t] <= set(ordered)]
        ordered += ready or [t for t in tables if t not in ordered]  # a cycle: let DELETE say so
    return ordered[::-1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def probe(url: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except Exception as exc:  # refused, unknown host, auth, no such database …
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


# Schemas are named bt_<host>_<pid>_<n>: a run sweeps the schemas of dead processes of its own machine
# only (a pid means nothing on another machine, or in another container, using the same server).
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_schemas: PostgresSchemas | None = None


def install(schemas: PostgresSchemas | None) -> None:
    """Set (or clear) the PostgreSQL schemas of this test process (conftest does it once per session)."""
    global _schemas
    _schemas = schemas


def postgres() -> PostgresSchemas | None:
    """The PostgreSQL schemas when the suite runs on PostgreSQL, else None."""
    return _schemas


_used = False  # whether the running test asked for a database (see the `no_database` marker)


def used() -> bool:
    """Whether the running test asked for a database so far."""
    return _used


def reset_used() -> None:
    """A new test starts."""
    global _used
    _used = False


def database_for(data_dir: Path) -> str:
    """What `Config.database` should be for a data directory: "" (SQLite in it) or its PostgreSQL schema."""
    global _used
    _used = True
    return "" if _schemas is None else _schemas.url_for(data_dir)


def database_url_for(data_dir: Path) -> str:
    """What `Database.create` should open for a data directory: its SQLite file or its PostgreSQL schema."""
    return database_for(data_dir) or str(data_dir / "bot.db")


def fresh_database_url(tmp_path: Path) -> str:
    """A database nobody else uses: a new SQLite file under tmp_path, or a new PostgreSQL schema."""
    global _used
    _used = True
    if _schemas is not None:
        return _schemas.fresh_url()
    return str(tmp_path / f"fresh-{next(_fresh)}.db")


_fresh = itertools.count(1)


def config_for(data_dir: Path, **fields: Any) -> Config:
    """`Config(data_dir=…)` on the test database of that data directory."""
    return Config(data_dir=data_dir, database=database_for(data_dir), **fields)


def env_for(data_dir: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """A child `run.py`'s environment (default: this one's), with BOT_DATABASE_URL for that data directory."""
    out = dict(os.environ if env is None else env)
    out.pop("BOT_DATABASE_URL", None)
    url = database_for(data_dir)
    if url:
        out["BOT_DATABASE_URL"] = url
    return out


def on_sqlite() -> bool:
    """True in the SQLite half of the suite."""
    return _schemas is None


def query(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    """Read a data directory's database from sync code, while its server may be running (rows as dicts)."""
    if _schemas is not None:
        return _schemas.query(_schemas.url_for(data_dir), sql)
    conn = sqlite3.connect(data_dir / "bot.db", timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def has_data(data_dir: Path) -> bool:
    """Whether anything wrote the data directory's database (SQLite: made its file; PostgreSQL: a row)."""
    if _schemas is None:
        return (data_dir / "bot.db").exists()
    url = _schemas.url_for(data_dir)
    return any(row for row in _schemas.dump(url, skip=("schema_migrations",)).splitlines())


def stored_bytes(data_dir: Path) -> bytes:
    """Everything the data directory's database holds: the SQLite files' bytes, or every PostgreSQL row as text."""
    if _schemas is not None:
        return _schemas.dump(_schemas.url_for(data_dir)).encode()
    return b"".join(p.read_bytes() for p in data_dir.glob("bot.db*"))


def proxied_url(url: str, port: int) -> str:
    """The same PostgreSQL URL through a proxy on 127.0.0.1:port (tests/fakes/tcp_proxy.py)."""
    parts = urllib.parse.urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))
