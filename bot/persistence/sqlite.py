"""The embedded backend: one SQLite file in WAL mode, one writer thread, a few reader connections.

Why a thread of our own for the writer: a group commit runs a whole group of units (BEGIN, a
savepoint and a few statements per unit, COMMIT) in ONE hop to the thread that owns the
connection. Through aiosqlite every statement would be its own hop, and the hops, not SQLite, were
what a turn spent its time on (about fifty per turn). Readers have no such need and use aiosqlite.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from bot.persistence.database import (
    Conflict,
    Database,
    DatabaseUnavailable,
    IntegrityError,
    Keys,
    Record,
    Stmt,
    Tx,
    to_qmark,
)
from bot.persistence.migrations import load_migrations
from bot.persistence.writer import GroupWriter, Unit

log = structlog.get_logger("bot.db")
T = TypeVar("T")

# Checkpoint policy: the checkpointer thread copies WAL frames back (PASSIVE, never blocks the writer);
# past WAL_LIMIT_BYTES the writer itself runs a TRUNCATE between groups: the WAL rewinds and the file
# shrinks to nothing (a RESTART would rewind it but leave the file at its size, so the size test would
# then call for a checkpoint after every group: 589 checkpoints instead of 19 for 40,000 webhooks);
# when the writer has been idle a moment, the checkpointer's TRUNCATE.
CHECKPOINT_INTERVAL = 0.5
WAL_LIMIT_BYTES = 16 * 1024 * 1024
JOURNAL_SIZE_LIMIT = 32 * 1024 * 1024
IDLE_TRUNCATE_SECONDS = 1.0
# Result codes that mean "the database cannot write now", not "this statement is wrong".
_UNAVAILABLE = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY",
                "SQLITE_CANTOPEN", "SQLITE_NOMEM", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_PROTOCOL",
                "SQLITE_INTERRUPT"}

_sql = lru_cache(maxsize=4096)(to_qmark)


def ensure_private_dir(path: Path) -> None:
    """Create the data directory as 0700, and tighten it if it already exists."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, stat.S_IRWXU)


_UNIT_ERRORS = (Conflict, sqlite3.Error, ValueError, TypeError, OverflowError)


def _touch_private(path: Path) -> None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def _is_unavailable(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return any(name.startswith(code) for code in _UNAVAILABLE) or "locked" in str(exc)


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(str(exc))
    if isinstance(exc, sqlite3.Error) and _is_unavailable(exc):
        return DatabaseUnavailable(str(exc))
    return exc


def _run_stmt(conn: sqlite3.Connection, stmt: Stmt) -> Any:
    if stmt.many is not None:
        conn.executemany(_sql(stmt.sql), stmt.many)
        return None
    cur = conn.execute(_sql(stmt.sql), stmt.args)
    if stmt.rows:
        return cur.fetchall()
    count = cur.rowcount
    if stmt.expect is not None and count != stmt.expect:
        raise Conflict(f"expected {stmt.expect} row(s), changed {count}: {stmt.sql[:80]}")
    return count


class SQLiteDatabase(Database):
    """SQLite in WAL mode: group-committing writer thread, aiosqlite readers, bounded WAL."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, readers: int = 2) -> None:
        super().__init__()
        self.path = path
        self._reader_count = max(1, readers)
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = 0
        self._wexec: ThreadPoolExecutor | None = None
        self._wconn: sqlite3.Connection | None = None
        self._writer = GroupWriter(self._group, translate=_translate, name="sqlite-writer")
        self._lock = asyncio.Lock()  # the writer's groups and transaction() take turns
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._last_write = time.monotonic()

    @property
    def groups(self) -> int:
        """Group commits so far (for the benchmark and tests)."""
        return self._writer.groups

    @property
    def description(self) -> str:
        """The file."""
        return f"sqlite:{self.path}"

    @property
    def wal_path(self) -> Path:
        """The write-ahead log beside the database file."""
        return Path(str(self.path) + "-wal")

    def wal_bytes(self) -> int:
        """The WAL file's size now (0 when there is none)."""
        try:
            return self.wal_path.stat().st_size
        except FileNotFoundError:
            return 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self, *, migrate: bool = True) -> None:
        """Create the file privately, set pragmas, migrate, start the writer and the checkpointer."""
        ensure_private_dir(self.path.parent)
        _touch_private(self.path)
        self._wexec = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        await self._in_writer(self._connect_writer)
        if migrate:
            await self.migrate()
        for suffix in ("-wal", "-shm"):
            with suppress(FileNotFoundError):
                os.chmod(Path(str(self.path) + suffix), stat.S_IRUSR | stat.S_IWUSR)
        for _ in range(self._reader_count):
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            reader.row_factory = aiosqlite.Row
            await reader.execute("PRAGMA busy_timeout=5000")
            await reader.execute("PRAGMA query_only=ON")
            self._readers.append(reader)
        self._checkpointer = await aiosqlite.connect(self.path, isolation_level=None)
        await self._checkpointer.execute("PRAGMA busy_timeout=200")
        self._writer.start()
        self._checkpoint_task = asyncio.get_running_loop().create_task(self._checkpoint_loop(),
                                                                       name="sqlite-checkpoint")

    def _connect_writer(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=5000",
            f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}",
            # SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 pages, stalling
            # that commit and every webhook behind it: checkpoints are ours (see CHECKPOINT_INTERVAL).
            "PRAGMA wal_autocheckpoint=0",
        ):
            conn.execute(pragma)
        self._wconn = conn

    async def close(self) -> None:
        """Let queued units commit, stop the loops, checkpoint (TRUNCATE) and close."""
        await self._writer.stop()
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._checkpoint_task
            self._checkpoint_task = None
        for conn in [*self._readers, *([self._checkpointer] if self._checkpointer else [])]:
            await conn.close()
        self._readers.clear()
        self._checkpointer = None
        if self._wexec is not None:
            if self._wconn is not None:
                await self._in_writer(self._close_writer)
            self._wexec.shutdown(wait=True)
            self._wexec = None

    def _close_writer(self) -> None:
        conn, self._wconn = self._wconn, None
        if conn is None:
            return
        try:
            # Best effort: the WAL is complete either way and is replayed at the next open.
            with suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._wexec is not None, "the database is not open"
        return await asyncio.get_running_loop().run_in_executor(self._wexec, fn, *args)

    @property
    def _writer_conn(self) -> sqlite3.Connection:
        if self._wconn is None:
            raise DatabaseUnavailable("the database is not open")
        return self._wconn

    async def pragma(self, statement: str) -> list[Any]:
        """Run `PRAGMA <statement>` on the writer's connection, between groups (maintenance and tests)."""
        async with self._lock:
            return await self._in_writer(lambda: self._writer_conn.execute(f"PRAGMA {statement}").fetchall())

    async def instrument(self, trace: Callable[[str], None] | None, progress: Callable[[], int] | None) -> None:
        """Fault injection for tests: SQLite's trace callback and progress handler on the writer's connection."""
        def install() -> None:
            self._writer_conn.set_trace_callback(trace)
            self._writer_conn.set_progress_handler(progress, 1)

        async with self._lock:
            await self._in_writer(install)

    # -- migrations ----------------------------------------------------------------------------
    async def migrate(self) -> list[int]:
        """Apply pending numbered migrations (bot/persistence/sql/sqlite)."""
        async with self._lock:
            return await self._in_writer(self._migrate_sync)

    def _migrate_sync(self) -> list[int]:
        conn = self._writer_conn
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        applied: list[int] = []
        for version, script in load_migrations("sqlite"):
            if version in done:
                continue
            # executescript commits on its own, so the version row goes in the same script.
            conn.executescript(
                f"BEGIN;\n{script}\nINSERT INTO schema_migrations (version, applied_at) "
                f"VALUES ({int(version)}, {time.time()});\nCOMMIT;"
            )
            applied.append(version)
        self.applied_migrations = [row[0] for row in conn.execute(
            "SELECT version FROM schema_migrations ORDER BY version")]
        return applied

    # -- reads ---------------------------------------------------------------------------------
    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[Record]:
        if not self._readers:
            raise DatabaseUnavailable("the database is not open")
        reader = self._readers[self._next_reader]
        self._next_reader = (self._next_reader + 1) % len(self._readers)
        try:
            return list(await reader.execute_fetchall(_sql(sql), args))
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    # -- the writer ----------------------------------------------------------------------------
    async def _write(self, unit: Sequence[Stmt], urgent: bool, keys: Keys) -> list[Any]:
        return await self._writer.submit(unit, urgent=urgent)  # one process, one writer: no lock order needed

    async def _group(self, group: list[Unit]) -> None:
        async with self._lock:
            try:
                await self._in_writer(self._run_group, group)
            finally:
                self._last_write = time.monotonic()

    def _run_group(self, group: list[Unit]) -> None:
        """In the writer thread: one transaction; a failing unit fails alone.

        As on PostgreSQL, the group first runs without a savepoint per unit (two statements more per
        unit, each a hop through the GIL that the event loop's thread holds most of the time): almost
        always no unit fails, and that is the group. When one does, the transaction is rolled back and
        the group runs again with a savepoint per unit, the failed unit failing at once.
        """
        conn = self._writer_conn
        failed: tuple[int, BaseException] | None = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            for index, unit in enumerate(group):
                try:
                    unit.outcome = [_run_stmt(conn, stmt) for stmt in unit.stmts]
                except _UNIT_ERRORS as exc:
                    failed = index, exc
                    break
            if failed is None:
                conn.execute("COMMIT")
            else:
                conn.execute("ROLLBACK")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if failed is not None:
            self._run_group_alone(group, *failed)
            return
        if self.wal_bytes() > WAL_LIMIT_BYTES:
            self._truncate_checkpoint()

    def _run_group_alone(self, group: list[Unit], failed_index: int, error: BaseException) -> None:
        """The group again, one savepoint per unit, after `failed_index` failed with `error`."""
        conn = self._writer_conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for index, unit in enumerate(group):
                if index == failed_index:
                    unit.outcome = _translate(error) if isinstance(error, sqlite3.Error) else error
                    continue
                conn.execute("SAVEPOINT unit")
                try:
                    unit.outcome = [_run_stmt(conn, stmt) for stmt in unit.stmts]
                except _UNIT_ERRORS as exc:
                    conn.execute("ROLLBACK TO unit")
                    unit.outcome = _translate(exc) if isinstance(exc, sqlite3.Error) else exc
                conn.execute("RELEASE unit")
            conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if self.wal_bytes() > WAL_LIMIT_BYTES:
            self._truncate_checkpoint()

    def _truncate_checkpoint(self) -> None:
        # Between groups, in the writer thread: nothing of ours is writing, so only readers are waited for.
        try:
            self._writer_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.debug("checkpoint_skipped", mode="truncate", error=str(exc))

    async def _checkpoint_loop(self) -> None:
        assert self._checkpointer is not None
        truncated = True
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            idle = self._writer.idle and \
                time.monotonic() - self._last_write > IDLE_TRUNCATE_SECONDS
            if idle and truncated:
                continue
            mode = "TRUNCATE" if idle else "PASSIVE"
            try:
                await self._checkpointer.execute(f"PRAGMA wal_checkpoint({mode})")
                truncated = idle
            except sqlite3.Error as exc:  # busy now: the next round catches up
                log.debug("checkpoint_skipped", mode=mode.lower(), error=str(exc))

    # -- exclusive transactions ----------------------------------------------------------------
    def _begin(self) -> AbstractAsyncContextManager[Tx]:
        return self._exclusive()

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[Tx]:
        async with self._lock:
            tx = _SQLiteTx(self)
            try:
                await self._in_writer(self._writer_conn.execute, "BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
            try:
                yield tx
            except BaseException:
                with suppress(sqlite3.Error):
                    await self._in_writer(self._writer_conn.execute, "ROLLBACK")
                raise
            try:
                await self._in_writer(self._writer_conn.execute, "COMMIT")
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    await self._in_writer(self._writer_conn.execute, "ROLLBACK")
                raise _translate(exc) from exc
            self._last_write = time.monotonic()


class _SQLiteTx(Tx):
    """Statements of an exclusive transaction, each one hop to the writer thread."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._db._in_writer(fn, *args)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        """Rows, read through the transaction's own connection."""
        conn = self._db._writer_conn
        return await self._call(lambda: conn.execute(_sql(sql), args).fetchall())

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; rows changed."""
        conn = self._db._writer_conn
        return await self._call(lambda: conn.execute(_sql(sql), args).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement per argument tuple."""
        conn = self._db._writer_conn
        await self._call(lambda: conn.executemany(_sql(sql), rows))

    async def run(self, unit: Sequence[Stmt]) -> list[Any]:
        """A whole unit in one hop, in a savepoint: if it fails, it is undone and the transaction goes on."""
        conn = self._db._writer_conn

        def in_savepoint() -> list[Any]:
            conn.execute("SAVEPOINT unit")
            try:
                results = [_run_stmt(conn, stmt) for stmt in unit]
            except BaseException:
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                raise
            conn.execute("RELEASE unit")
            return results

        return await self._call(in_savepoint)
