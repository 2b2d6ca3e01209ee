"""PostgreSQL for the benchmark: a fresh schema per phase, and the CPU of the backends serving its servers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import asyncpg

from bench.common import cpu_seconds

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
# Any lock key will do, as long as every creator of the extension takes the same one (tests/backend.py
# uses it too): two sessions creating it at once would collide on pg_extension's unique index.
_EXTENSION_LOCK = "SELECT pg_advisory_xact_lock(6451574, 1)"


def with_search_path(url: str, schema: str) -> str:
    """The URL with `search_path=<schema>` (the server finds its schema there); `schema` needs no quoting."""
    if "search_path=" in url:
        raise ValueError(f"{url} sets search_path: give the database alone, each phase makes a schema of its own")
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


class Schema:
    """One schema of its own for a phase, and an admin connection that looks at its servers' sessions."""

    def __init__(self, conn: asyncpg.Connection, name: str, url: str) -> None:
        self._conn = conn
        self.name = name
        self.url = url

    @classmethod
    @asynccontextmanager
    async def fresh(cls, url: str, name: str, *, keep: bool = False) -> AsyncIterator[Schema]:
        """Create the schema (and unaccent in public, which the migrations need); drop it afterwards unless kept."""
        schema_url = with_search_path(url, name)
        try:
            conn: asyncpg.Connection = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            raise RuntimeError(f"cannot connect to PostgreSQL at {url} ({exc}); start it, or pass --pg-url") from exc
        try:
            async with conn.transaction():
                await conn.execute(_EXTENSION_LOCK)
                await conn.execute("CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public")
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')  # left by a run that was killed
            await conn.execute(f'CREATE SCHEMA "{name}"')
            try:
                yield cls(conn, name, schema_url)
            finally:
                if not keep:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()

    async def backend_cpu(self, server_pids: Iterable[int]) -> dict[int, float]:
        """CPU seconds so far of every backend whose session belongs to one of these server processes.

        The server names each session `bot <role> <pid>` (application_name); the backends run on this
        machine, so their CPU is read from /proc like any other process's.
        """
        pids = {str(p) for p in server_pids}
        rows = await self._conn.fetch("SELECT pid, application_name FROM pg_stat_activity "
                                      "WHERE application_name LIKE 'bot %'")
        out: dict[int, float] = {}
        for row in rows:
            if str(row["application_name"]).rsplit(" ", 1)[-1] in pids:
                try:
                    out[int(row["pid"])] = cpu_seconds(int(row["pid"]))
                except (FileNotFoundError, ProcessLookupError):
                    pass  # the session ended between the query and the read
        return out


class BackendCpu:
    """Cores the servers' PostgreSQL backends used between start() and stop().

    A backend that appears meanwhile (the read pool grows under load) counts from its start; one
    that ends meanwhile is not counted (the pools keep theirs while a phase runs).
    """

    def __init__(self, schema: Schema, server_pids: list[int]) -> None:
        self._schema = schema
        self._server_pids = server_pids
        self._start: dict[int, float] = {}
        self._t0 = 0.0

    async def start(self) -> None:
        """Take the first reading."""
        self._start = await self._schema.backend_cpu(self._server_pids)
        self._t0 = time.monotonic()

    async def stop(self) -> float:
        """Cores used since start() (1.0 = one core fully busy), every backend together."""
        now = await self._schema.backend_cpu(self._server_pids)
        wall = max(1e-9, time.monotonic() - self._t0)
        return round(sum(cpu - self._start.get(pid, 0.0) for pid, cpu in now.items()) / wall, 3)
