"""The one owner of the SQLite file: pragmas, numbered migrations and a re-entrant transaction()."""

from __future__ import annotations

import asyncio
import contextvars
import os
import stat
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from bot.persistence.migrations import MIGRATIONS

Row = aiosqlite.Row
CHECKPOINT_INTERVAL = 1.0  # seconds between background WAL checkpoints
log = structlog.get_logger("bot.db")
T = TypeVar("T")


def row_to(cls: type[T], row: Row) -> T:
    """Build a dataclass from a row by field name; SQLite's 0/1 become bools where the field says bool."""
    keys = set(row.keys())
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in keys:
            continue
        value = row[f.name]
        if f.type in ("bool", bool) and value is not None:
            value = bool(value)
        values[f.name] = value
    return cls(**values)


class DatabaseUnavailable(RuntimeError):
    """The database cannot take writes right now (locked, full, read-only); callers answer 503."""


def ensure_private_dir(path: Path) -> None:
    """Create the data directory as 0700, and tighten it if it already exists."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, stat.S_IRWXU)


def _touch_private(path: Path) -> None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


class Database:
    """Opens the file, applies migrations, and serialises transactions on one connection.

    aiosqlite runs every statement on one background thread, so statements never run at the
    same time. Transactions still need an asyncio lock, or two coroutines would interleave their
    statements inside one BEGIN…COMMIT. The lock is re-entrant per task through a context var.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._in_tx: contextvars.ContextVar[bool] = contextvars.ContextVar(f"in_tx_{id(self)}", default=False)
        self.applied_migrations: list[int] = []
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None

    @property
    def conn(self) -> aiosqlite.Connection:
        """The open connection; raises if the database is not open."""
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self) -> None:
        """Open (creating privately if needed), set pragmas, run pending migrations."""
        ensure_private_dir(self.path.parent)
        _touch_private(self.path)
        self._conn = await aiosqlite.connect(self.path, isolation_level=None)
        self._conn.row_factory = aiosqlite.Row
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=5000",
        ):
            await self._conn.execute(pragma)
        await self._migrate()
        for suffix in ("-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            with suppress(FileNotFoundError):
                os.chmod(side, stat.S_IRUSR | stat.S_IWUSR)
        # SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages, stalling
        # that commit (and every webhook queued behind it) for a long moment. Checkpoint instead from a
        # connection of its own, on its own thread, where PASSIVE mode never blocks the writer.
        await self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = await aiosqlite.connect(self.path, isolation_level=None)
        await self._checkpointer.execute("PRAGMA busy_timeout=1000")
        self._checkpoint_task = asyncio.get_running_loop().create_task(
            self._checkpoint_loop(), name="sqlite-checkpoint"
        )

    async def _checkpoint_loop(self, interval: float = CHECKPOINT_INTERVAL) -> None:
        assert self._checkpointer is not None
        while True:
            await asyncio.sleep(interval)
            try:
                await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except aiosqlite.OperationalError as exc:  # busy now: the next round catches up
                log.debug("checkpoint_skipped", error=str(exc))

    async def close(self) -> None:
        """Checkpoint and close."""
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._checkpoint_task
            self._checkpoint_task = None
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            await checkpointer.close()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                # Best effort: after turns were cancelled mid-statement the checkpoint can find a table
                # still locked. The WAL is complete either way and is replayed at the next open.
                with suppress(aiosqlite.OperationalError):
                    await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                await conn.close()

    async def _migrate(self) -> None:
        conn = self.conn
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        async with conn.execute("SELECT version FROM schema_migrations ORDER BY version") as cur:
            done = {row[0] for row in await cur.fetchall()}
        for version, script in MIGRATIONS:
            if version in done:
                continue
            # executescript commits on its own, so the version row goes in the same script.
            await conn.executescript(
                f"BEGIN;\n{script}\nINSERT INTO schema_migrations (version, applied_at) "
                f"VALUES ({int(version)}, {time.time()});\nCOMMIT;"
            )
        async with conn.execute("SELECT version FROM schema_migrations ORDER BY version") as cur:
            self.applied_migrations = [row[0] for row in await cur.fetchall()]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on error; nested calls join the outer one."""
        if self._in_tx.get():
            yield self.conn
            return
        async with self._lock:
            token = self._in_tx.set(True)
            try:
                try:
                    await self.conn.execute("BEGIN IMMEDIATE")
                except aiosqlite.OperationalError as exc:
                    raise DatabaseUnavailable(str(exc)) from exc
                try:
                    yield self.conn
                except aiosqlite.OperationalError as exc:
                    # Locked past busy_timeout, disk full, read-only: not the caller's fault, and
                    # worth telling apart from bugs (the webhook answers 503 so Meta retries).
                    await self._rollback()
                    raise DatabaseUnavailable(str(exc)) from exc
                except BaseException:
                    await self._rollback()
                    raise
                try:
                    await self.conn.execute("COMMIT")
                except aiosqlite.OperationalError as exc:
                    await self._rollback()
                    raise DatabaseUnavailable(str(exc)) from exc
            finally:
                self._in_tx.reset(token)

    async def _rollback(self) -> None:
        with suppress(aiosqlite.OperationalError):
            await self.conn.execute("ROLLBACK")

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one write statement in its own transaction (or the caller's); returns rowcount."""
        async with self.transaction() as conn:
            cur = await conn.execute(sql, params)
            count = cur.rowcount
            await cur.close()
            return count

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many rows in one transaction."""
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)

    async def insert(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int | None:
        """Run an INSERT; returns the new rowid, or None when OR IGNORE skipped it."""
        async with self.transaction() as conn:
            cur = await conn.execute(sql, params)
            rowid = cur.lastrowid if cur.rowcount else None
            await cur.close()
            return rowid

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        """Read rows."""
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        """Read one row or None."""
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        """Read the first column of the first row, or None."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]
