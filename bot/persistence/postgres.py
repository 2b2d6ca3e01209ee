"""The shared backend: PostgreSQL through asyncpg, for one or several server processes.

The same three ways in as SQLite (see database.py), mapped onto a server:
- reads go to a connection pool, never behind the writer;
- `write(unit)` goes to ONE writer connection that group-commits every waiting unit in one
  transaction, each unit in its own savepoint (taken only when a unit of the group fails, see
  `_run_group`). One commit (one WAL flush) is shared by many units, and a unit that fails is rolled
  back alone;
- `transaction()` runs on a pool connection beside the writer. What makes it exclusive is a
  transaction-scoped advisory lock, taken first: two `transaction()` blocks, in this process or
  another, never interleave their read-modify-write (two clicks on one order link confirm once).

Why one writer and not a few: measured on 2 cores (units of three statements, 8 to 256 concurrent
writers of units), one writer committed 1,000-1,900 units/s and two 1,000-1,800: no clear gain,
because the writer spends its time in round trips, not waiting for commits. And two writers' groups
would take row locks in different orders and could deadlock each other (PostgreSQL resolves that by
failing one group whole, after deadlock_timeout). Running groups without savepoints unless a unit
fails (see `_run_group`) was the change that paid: 1.2 to 2 times the units per second.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

import asyncpg
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
)
from bot.persistence.migrations import load_migrations
from bot.persistence.writer import GroupWriter, Unit

log = structlog.get_logger("bot.db")

# A lock held elsewhere (a long transaction, a migration, a `LOCK TABLE` in a psql shell) makes a write
# fail after this long instead of hanging: the webhook answers 503 and Meta redelivers, as with
# SQLite's busy_timeout.
LOCK_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_SECONDS = 5.0
# A statement that has not answered in this long is given up on (a network that drops packets
# silently would otherwise hold the writer, and every webhook behind it, until TCP gives up).
COMMAND_TIMEOUT_SECONDS = 30.0
POOL_SIZE = 10
# pg_advisory_xact_lock(classid, objid): the first key says "bot", the second what is locked, both
# per schema (hashtext(current_schema())) so two installations in one database never wait on each other.
_LOCK_CLASS = 0x626F74  # "bot"
_MIGRATIONS_LOCK = f"pg_advisory_xact_lock({_LOCK_CLASS}, hashtext(COALESCE(current_schema(), '') || ':migrations'))"
_EXCLUSIVE_LOCK = f"pg_advisory_xact_lock({_LOCK_CLASS}, hashtext(COALESCE(current_schema(), '') || ':exclusive'))"

# SQLSTATE classes and codes that mean "the database cannot write now", not "this statement is wrong":
# connection exceptions, a rollback forced by serialization or a deadlock, insufficient resources (disk
# full, too many connections), an operator's intervention (shutdown, cancel), a system error, a lock not
# granted in time, a read-only server (a standby after failover), and authentication (a changed password).
_UNAVAILABLE_CLASSES = ("08", "40", "53", "57", "58", "28")
_UNAVAILABLE_CODES = {"55P03", "25006", "3D000"}


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_CODES
    if isinstance(exc, asyncpg.exceptions.DataError | asyncpg.exceptions.ClientConfigurationError):
        return False  # a bad argument for this statement
    # "connection is closed", a refused or timed-out connect, a socket reset.
    return isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError | asyncpg.exceptions.InternalClientError)


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(str(exc))
    if _is_unavailable(exc):
        return DatabaseUnavailable(f"{type(exc).__name__}: {exc}")
    return exc


# What a unit can fail with on its own (the connection still good): a constraint, a compare-and-set
# miss, bad data, a lock not granted in time, a statement PostgreSQL refuses.
_UNIT_ERRORS = (Conflict, asyncpg.PostgresError, asyncpg.exceptions.DataError, ValueError, TypeError, OverflowError)


DEADLOCK_RETRIES = 3
_GROUP_ERRORS = (asyncpg.exceptions.DeadlockDetectedError,)
# The group's conversations, locked first and in one order (the sort below the lock): two processes'
# groups then wait for each other instead of deadlocking. Every row of a conversation (its inbox,
# outbox, contact) is touched only after its conversation's row is ours.
# One lookup per key on the unique index, in key order, all sent in one round trip (executemany
# pipelines them): a join with an array of keys was planned once per connection, while the table was
# still empty, as a sequential scan, and kept that plan as the table grew.
_LOCK_CONVERSATION = "SELECT 1 FROM conversations WHERE phone_number_id = $1 AND customer_id = $2 FOR UPDATE"


async def _lock_conversations(conn: asyncpg.Connection, keys: list[tuple[str, str]]) -> None:
    if keys:
        await conn.executemany(_LOCK_CONVERSATION, keys)  # `keys` is sorted: the lock order


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """A pool connection goes back as it is (asyncpg still rolls back a transaction left open).

    Nothing here changes a reader's session (no SET, LISTEN, session advisory lock or cursor kept:
    those have connections of their own), and asyncpg's default reset (`RESET ALL; UNLISTEN *; ...`)
    is one more round trip for every read.
    """


class _Retry(Exception):
    """A unit of the group failed: roll back, and run the group again with a savepoint per unit."""


def _rowcount(status: str) -> int:
    """Rows changed, from a command tag: "UPDATE 3", "INSERT 0 1", "DELETE 0" (none for DDL)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _clean(args: Sequence[Any]) -> tuple[Any, ...]:
    """PostgreSQL text cannot hold NUL: it becomes U+FFFD (SQLite keeps it; nothing here relies on it)."""
    if not any(isinstance(a, str) and "\x00" in a for a in args):
        return tuple(args)
    return tuple(a.replace("\x00", "\ufffd") if isinstance(a, str) else a for a in args)


def redact_url(url: str) -> str:
    """The URL without its password, for logs and diagnostics."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def _run_stmt(conn: asyncpg.Connection, stmt: Stmt) -> Any:
    if stmt.many is not None:
        await conn.executemany(stmt.sql, [_clean(row) for row in stmt.many])
        return None
    if stmt.rows:
        return await conn.fetch(stmt.sql, *_clean(stmt.args))
    count = _rowcount(await conn.execute(stmt.sql, *_clean(stmt.args)))
    if stmt.expect is not None and count != stmt.expect:
        raise Conflict(f"expected {stmt.expect} row(s), changed {count}: {stmt.sql[:80]}")
    return count


class PostgresDatabase(Database):
    """PostgreSQL: a group-committing writer connection, a read pool, advisory-locked transactions."""

    dialect = "postgres"

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        super().__init__()
        self.url = url
        self._pool_size = max(1, pool_size)
        self._pool: asyncpg.Pool | None = None
        self._wconn: asyncpg.Connection | None = None
        self._writer = GroupWriter(self._group, translate=_translate, name="postgres-writer")

    @property
    def groups(self) -> int:
        """Group commits so far (for the benchmark and tests)."""
        return self._writer.groups

    @property
    def description(self) -> str:
        """The server and database, without the password."""
        return redact_url(self.url)

    # -- lifecycle -----------------------------------------------------------------------------
    def _settings(self, role: str) -> dict[str, str]:
        """Session settings, unless the URL sets them itself (`?lock_timeout=…&application_name=…`)."""
        given = urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query)
        # The pid says which server process a session is, in pg_stat_activity and pg_locks.
        settings = {"lock_timeout": str(LOCK_TIMEOUT_MS), "application_name": f"bot {role} {os.getpid()}"}
        return {k: v for k, v in settings.items() if k not in given}

    async def _connect(self) -> asyncpg.Connection:
        return await self.connect("writer")

    async def connect(self, role: str) -> asyncpg.Connection:
        """A connection of its own (the cluster's locks and notifications), named `bot <role>` in pg_stat_activity."""
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self.url, timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=COMMAND_TIMEOUT_SECONDS,
                server_settings=self._settings(role))
        except Exception as exc:
            if _is_unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {self.description}: "
                                          f"{type(exc).__name__}: {exc}") from exc
            raise
        return conn

    async def open(self, *, migrate: bool = True) -> None:
        """Connect the writer and the pool, and (unless told not to) apply pending migrations."""
        self._wconn = await self._connect()
        try:
            if migrate:
                await self.migrate()
            else:
                self.applied_migrations = await self._versions(self._wconn)
            try:
                self._pool = await asyncpg.create_pool(
                    self.url, min_size=1, max_size=self._pool_size, timeout=CONNECT_TIMEOUT_SECONDS,
                    command_timeout=COMMAND_TIMEOUT_SECONDS, server_settings=self._settings("reader"),
                    reset=_keep_session)
            except Exception as exc:
                raise _translate(exc) from exc
        except BaseException:
            await self._wconn.close()
            self._wconn = None
            raise
        self._writer.start()

    async def close(self) -> None:
        """Let queued units commit, stop the writer, and disconnect."""
        await self._writer.stop()
        if self._wconn is not None:
            with suppress(Exception):
                await asyncio.wait_for(self._wconn.close(), 5)
            self._wconn = None
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 10)
            except (TimeoutError, Exception):
                self._pool.terminate()
            self._pool = None

    # -- migrations ----------------------------------------------------------------------------
    async def migrate(self) -> list[int]:
        """Apply pending numbered migrations (bot/persistence/sql/postgres), all in one transaction.

        Several processes may start at once: each takes the same advisory lock first, so one applies
        the migrations and the others, once it has committed, find nothing left to do.
        """
        # At open, before the writer runs, on its connection; later (run.py migrate) on one of its own.
        conn = self._wconn if self._wconn is not None and not self._writer.running else await self._connect()
        applied: list[int] = []
        try:
            async with conn.transaction():
                await conn.execute(f"SELECT {_MIGRATIONS_LOCK}")
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                                   "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
                done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
                for version, script in load_migrations("postgres"):
                    if version in done:
                        continue
                    await conn.execute(script)  # no arguments: the simple protocol runs the whole script
                    await conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                                       version, time.time())
                    applied.append(version)
            self.applied_migrations = await self._versions(conn)
        except Exception as exc:
            raise _translate(exc) from exc
        finally:
            if conn is not self._wconn:
                await conn.close()
        return applied

    @staticmethod
    async def _versions(conn: asyncpg.Connection) -> list[int]:
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            return []
        return [row[0] for row in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]

    # -- reads ---------------------------------------------------------------------------------
    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[Record]:
        if self._pool is None:
            raise DatabaseUnavailable("the database is not open")
        try:
            return list(await self._pool.fetch(sql, *_clean(args)))
        except Exception as exc:
            raise _translate(exc) from exc

    async def fetch_alone(self, sql: str, *args: Any) -> list[Record]:
        """A write statement committed on its own, on a pool connection, outside the writer's groups.

        For a hot row every process updates (the shared send rate's bucket): in a group it would be
        locked until the whole group commits, and wait on, or deadlock with, other processes' groups.
        """
        return await self._fetch(sql, args)

    # -- the writer ----------------------------------------------------------------------------
    async def _write(self, unit: Sequence[Stmt], urgent: bool, keys: Keys) -> list[Any]:
        return await self._writer.submit(unit, urgent=urgent, keys=keys)

    async def _group(self, group: list[Unit]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._run_group(await self._writer_connection(), group)
                return
            except asyncpg.exceptions.DeadlockDetectedError:
                # Another process's group and ours locked rows in different orders (rows the units did
                # not declare): PostgreSQL aborted ours, the other went on. Nothing of ours was written.
                await self._drop_writer_if_broken()
                if attempt >= DEADLOCK_RETRIES:
                    raise
                log.warning("group_deadlock_retried", attempt=attempt, units=len(group))
            except BaseException:
                await self._drop_writer_if_broken()
                raise

    async def _writer_connection(self) -> asyncpg.Connection:
        """The writer's connection, reconnected after a loss (a restart, a failover, a network cut)."""
        if self._wconn is None or self._wconn.is_closed():
            self._wconn = None
            self._wconn = await self._connect()
            log.info("database_reconnected", database=self.description)
        return self._wconn

    async def _drop_writer_if_broken(self) -> None:
        conn = self._wconn
        if conn is None:
            return
        if conn.is_closed() or conn.is_in_transaction():
            self._wconn = None
            with suppress(Exception):
                conn.terminate()

    @staticmethod
    async def _run_group(conn: asyncpg.Connection, group: list[Unit]) -> None:
        """One transaction, one savepoint per unit; a failing unit fails alone.

        Savepoints cost two round trips per unit (SAVEPOINT, RELEASE), as much as the unit itself
        when it is one or two statements. So the group first runs without them: almost always no unit
        fails, and that is the whole group. When one does, the transaction is rolled back and the
        group runs again with a savepoint per unit, the failed unit failing at once (it is not run a
        second time, so a lock it waited for is not waited for twice).
        """
        failed: tuple[int, BaseException] | None = None
        keys = sorted({key for unit in group for key in unit.keys})
        try:
            async with conn.transaction():
                await _lock_conversations(conn, keys)
                for index, unit in enumerate(group):
                    try:
                        unit.outcome = [await _run_stmt(conn, stmt) for stmt in unit.stmts]
                    except _UNIT_ERRORS as exc:
                        if conn.is_closed() or isinstance(exc, _GROUP_ERRORS):
                            raise  # the connection is gone, or the group must run again: not this unit's fault
                        failed = index, exc
                        raise _Retry from exc  # rolls the whole transaction back
            return
        except _Retry:
            assert failed is not None
        failed_index, error = failed
        async with conn.transaction():
            await _lock_conversations(conn, keys)
            for index, unit in enumerate(group):
                if index == failed_index:
                    unit.outcome = _translate(error)
                    continue
                try:
                    async with conn.transaction():  # nested: a savepoint
                        unit.outcome = [await _run_stmt(conn, stmt) for stmt in unit.stmts]
                except _UNIT_ERRORS as exc:
                    if conn.is_closed() or isinstance(exc, _GROUP_ERRORS):
                        raise
                    unit.outcome = _translate(exc)

    # -- exclusive transactions ----------------------------------------------------------------
    def _begin(self) -> AbstractAsyncContextManager[Tx]:
        return self._exclusive()

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[Tx]:
        if self._pool is None:
            raise DatabaseUnavailable("the database is not open")
        try:
            conn: asyncpg.Connection = await self._pool.acquire()
        except Exception as exc:
            raise _translate(exc) from exc
        try:
            tr = conn.transaction()
            try:
                await tr.start()
                await conn.execute(f"SELECT {_EXCLUSIVE_LOCK}")
            except Exception as exc:
                with suppress(Exception):
                    await tr.rollback()
                raise _translate(exc) from exc
            try:
                yield _PostgresTx(conn)
            except BaseException:
                with suppress(Exception):
                    await tr.rollback()
                raise
            try:
                await tr.commit()
            except Exception as exc:
                with suppress(Exception):
                    await tr.rollback()
                raise _translate(exc) from exc
        finally:
            with suppress(Exception):
                await self._pool.release(conn)


class _PostgresTx(Tx):
    """Statements of an exclusive transaction on its pool connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        """Rows, read inside the transaction."""
        try:
            return list(await self._conn.fetch(sql, *_clean(args)))
        except Exception as exc:
            raise _translate(exc) from exc

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; rows changed."""
        try:
            return _rowcount(await self._conn.execute(sql, *_clean(args)))
        except Exception as exc:
            raise _translate(exc) from exc

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement per argument tuple."""
        try:
            await self._conn.executemany(sql, [_clean(row) for row in rows])
        except Exception as exc:
            raise _translate(exc) from exc

    async def run(self, unit: Sequence[Stmt]) -> list[Any]:
        """A whole unit in a savepoint: if it fails, it is undone and the transaction goes on."""
        try:
            async with self._conn.transaction():
                return [await _run_stmt(self._conn, stmt) for stmt in unit]
        except Conflict:
            raise
        except Exception as exc:
            raise _translate(exc) from exc
