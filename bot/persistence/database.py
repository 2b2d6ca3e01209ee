"""The one `Database` interface: reads, units of work committed by one writer, and exclusive transactions.

After mautrix-python's `util/async_db`: `Database.create(url)` picks a backend by scheme (one file each:
sqlite.py, postgres.py), SQL is written once with `$1` placeholders that the SQLite backend rewrites,
and numbered migrations know their dialect (bot/persistence/sql/<dialect>/).

Three ways to reach the data, by what the caller needs:
- `fetch` / `fetchrow` / `fetchval`: reads on their own connection (WAL readers, or a pool), never
  behind the writer.
- `write(unit)`: a unit of work (a few statements) committed by the single writer in its next group
  commit, together with every other unit waiting, each in its own savepoint so that a unit that fails,
  fails alone. Webhook inserts are `urgent` and go first. This is the hot path: one round trip to the
  writer for many units.
- `transaction()`: an exclusive read-modify-write transaction for the rare logic that must read inside
  its transaction (orders, users). It holds the writer while open, so keep it short.
Inside `transaction()`, every method of the database joins it, so repository methods compose.
"""

from __future__ import annotations

import contextvars
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

Dialect = Literal["sqlite", "postgres"]
T = TypeVar("T")


class Record(Protocol):
    """A result row: by column name or position, with its column names (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: int | str, /) -> Any:
        """A column's value."""
        ...

    def keys(self) -> Any:
        """The column names."""
        ...


class DatabaseUnavailable(RuntimeError):
    """The database cannot take writes right now (locked, full, unreachable); callers answer 503."""


class IntegrityError(RuntimeError):
    """A unit broke a constraint (unique, check, foreign key); nothing of that unit was written."""


class Conflict(RuntimeError):
    """A compare-and-set statement matched a different number of rows than expected; the unit was undone."""


Keys = Sequence[tuple[str, str]]  # conversations: (phone_number_id, customer_id)


@dataclass(frozen=True, slots=True)
class Stmt:
    """One statement of a unit of work.

    `rows`: return the rows (a SELECT, or RETURNING), else the number of rows changed.
    `expect`: compare-and-set; unless exactly this many rows change, the whole unit is undone and
    `write` raises `Conflict`.
    `many`: run the statement once per argument tuple (the result is None).
    """

    sql: str
    args: tuple[Any, ...] = ()
    rows: bool = False
    expect: int | None = None
    many: Sequence[Sequence[Any]] | None = None


def row_to(cls: type[T], row: Record) -> T:
    """Build a dataclass from a row by field name; 0/1 become bools where the field says bool."""
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


# Rows per multi-row statement at most: with 12 parameters a row, well under both backends' limits.
MAX_ROWS = 256


def sized_chunks(items: Sequence[T], largest: int = MAX_ROWS) -> list[Sequence[T]]:
    """`items` cut into runs whose lengths are powers of two (at most `largest`, itself one), longest first.

    A multi-row statement's text depends on its number of rows. Cut like this, a table's inserts come
    in at most log2(largest) + 1 shapes, so both backends' prepared-statement caches (SQLite's 128,
    asyncpg's 100 statements per connection) keep them, instead of parsing and planning anew a text
    for every batch size (on PostgreSQL, one more round trip each).
    """
    out: list[Sequence[T]] = []
    start, size = 0, largest
    while start < len(items):
        while size > len(items) - start:
            size //= 2
        out.append(items[start : start + size])
        start += size
    return out


def values_stmts(sql: str, rows: Sequence[Sequence[Any]], *, returning: bool = False) -> list[Stmt]:
    """Multi-row statements for `rows` (tuples of one width): `sql` has a `{rows}` where the VALUES go.

    In `sized_chunks`, so each table's statement comes in a few shapes only.
    """
    stmts: list[Stmt] = []
    for chunk in sized_chunks(rows):
        width = len(chunk[0])
        placeholders = ", ".join(f"({marks(width, 1 + i * width)})" for i in range(len(chunk)))
        stmts.append(Stmt(sql.format(rows=placeholders), tuple(v for row in chunk for v in row), rows=returning))
    return stmts


def in_list(values: Sequence[Any], start: int = 1) -> tuple[str, tuple[Any, ...]]:
    """An `IN (...)` list's placeholders and arguments, padded to a power of two with its last value.

    Repeating a value changes nothing an IN list matches, and the statement then comes in a few
    shapes, not one per length (see `sized_chunks`).
    """
    size = 1
    while size < len(values):
        size *= 2
    padded = (*values, *[values[-1]] * (size - len(values))) if values else ()
    return marks(len(padded), start), padded


def marks(count: int, start: int = 1) -> str:
    """`$start, $start+1, …` for an IN list of `count` values."""
    return ", ".join(f"${i}" for i in range(start, start + count))


def like_contains(text: str) -> str:
    """A LIKE pattern for "contains `text`", its wildcards escaped; use it with `LIKE $n ESCAPE '\\'`.

    The ESCAPE clause makes both dialects agree: PostgreSQL escapes with a backslash by default,
    SQLite has no escape character unless told.
    """
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_PLACEHOLDER = re.compile(r"\$(\d+)")
# What PostgreSQL's default text search parser and SQLite's unicode61 both take for one word:
# letters and digits (an underscore separates, as punctuation does).
_TS_WORD = re.compile(r"[^\W_]+")
MAX_QUERY_WORDS = 12
TS_CONFIG = "bot_search"  # the accent-folding text search configuration of sql/postgres/0002_crm.sql


def ts_query(text: str, *, any_word: bool = False, prefix: bool = True) -> str | None:
    """A safe PostgreSQL tsquery for `to_tsquery(TS_CONFIG, …)`: every word a quoted lexeme, prefix-matched.

    Words are letters and digits only, so nothing of the text can become tsquery syntax; quoting is
    a second fence. None when the text has no word.
    """
    words = _TS_WORD.findall(text.lower())[:MAX_QUERY_WORDS]
    if not words:
        return None
    suffix = ":*" if prefix else ""
    return (" | " if any_word else " & ").join(f"'{word}'{suffix}" for word in words)


def to_qmark(sql: str) -> str:
    """`$1` → `?1`: SQLite's numbered parameters, so a value may be used twice as in PostgreSQL."""
    return _PLACEHOLDER.sub(r"?\1", sql)


class _Reads(ABC):
    """`fetchrow` and `fetchval`, for anything that can `fetch`."""

    @abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        """Rows of a query."""

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        """The first row, or None."""
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None."""
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


class Tx(_Reads):
    """An open exclusive transaction (see `Database.transaction`)."""

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the number of rows changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per argument tuple."""

    async def run(self, unit: Sequence[Stmt]) -> list[Any]:
        """Run a unit's statements here, with the same results and checks as `Database.write`."""
        results: list[Any] = []
        for stmt in unit:
            if stmt.many is not None:
                await self.executemany(stmt.sql, stmt.many)
                results.append(None)
            elif stmt.rows:
                results.append(await self.fetch(stmt.sql, *stmt.args))
            else:
                count = await self.execute(stmt.sql, *stmt.args)
                if stmt.expect is not None and count != stmt.expect:
                    raise Conflict(f"expected {stmt.expect} row(s), changed {count}: {stmt.sql[:80]}")
                results.append(count)
        return results


class Database(_Reads):
    """The storage of one server (or of a cluster of servers, on PostgreSQL)."""

    dialect: ClassVar[Dialect]

    def __init__(self) -> None:
        self.applied_migrations: list[int] = []
        # The transaction this task is inside, if any: every call joins it.
        self._tx: contextvars.ContextVar[Tx | None] = contextvars.ContextVar(f"tx_{id(self)}", default=None)

    @staticmethod
    def create(url: str | Path, *, readers: int = 2) -> Database:
        """The backend for a URL: `postgresql://…` (asyncpg) or a path / `sqlite:///path` (SQLite)."""
        text = str(url)
        if text.startswith(("postgres://", "postgresql://")):
            from bot.persistence.postgres import PostgresDatabase

            return PostgresDatabase(text)
        from bot.persistence.sqlite import SQLiteDatabase

        path = Path(text.removeprefix("sqlite:///").removeprefix("sqlite://")) if text.startswith("sqlite:") \
            else Path(text)
        return SQLiteDatabase(path, readers=readers)

    @property
    def description(self) -> str:
        """Where the data lives, for logs and diagnostics (no password)."""
        return self.dialect

    @abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect, set up, and (unless told not to) apply pending migrations."""

    @abstractmethod
    async def close(self) -> None:
        """Finish queued writes and disconnect."""

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied now."""

    # -- reads --------------------------------------------------------------------------------
    @abstractmethod
    async def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[Record]: ...

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        """Rows of a read-only query (joins the current transaction, if any)."""
        tx = self._tx.get()
        if tx is not None:
            return await tx.fetch(sql, *args)
        return await self._fetch(sql, args)

    # -- writes -------------------------------------------------------------------------------
    @abstractmethod
    async def _write(self, unit: Sequence[Stmt], urgent: bool, keys: Keys) -> list[Any]: ...

    async def write(self, unit: Sequence[Stmt], *, urgent: bool = False, keys: Keys = ()) -> list[Any]:
        """Commit a unit of work in the writer's next group; one result per statement.

        `keys`: the conversations (business number id, customer id) whose rows the unit touches. With
        several processes on PostgreSQL, a group locks its conversations' rows first, in one order,
        so that two processes' groups never deadlock on each other's conversations.

        Raises `Conflict` (a compare-and-set missed), `IntegrityError` (a constraint), or
        `DatabaseUnavailable`; in every case nothing of this unit was written, and the other units
        of the group are not affected.
        """
        tx = self._tx.get()
        if tx is not None:
            return await tx.run(unit)
        if not unit:
            return []
        return await self._write(unit, urgent, tuple(keys))

    async def execute(self, sql: str, *args: Any) -> int:
        """One write statement as its own unit; returns the number of rows changed."""
        result = await self.write([Stmt(sql, args)])
        return int(result[0])

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for many argument tuples, as one unit."""
        if rows:
            await self.write([Stmt(sql, many=rows)])

    async def insert(self, sql: str, *args: Any) -> Any:
        """An INSERT … RETURNING as its own unit; returns the first column of the row (None if none)."""
        rows = (await self.write([Stmt(sql, args, rows=True)]))[0]
        return rows[0][0] if rows else None

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """An exclusive transaction: committed on exit, rolled back on error; nested calls join it."""
        return _Joined(self)

    @abstractmethod
    def _begin(self) -> AbstractAsyncContextManager[Tx]: ...

    @property
    def in_transaction(self) -> bool:
        """True inside `transaction()` in this task."""
        return self._tx.get() is not None

    # -- maintenance --------------------------------------------------------------------------
    async def table_counts(self, tables: Sequence[str]) -> Mapping[str, int]:
        """Row counts of some tables (copying between backends checks them)."""
        return {t: int(await self.fetchval(f"SELECT COUNT(*) FROM {t}") or 0) for t in tables}


class _Joined(AbstractAsyncContextManager[Tx]):
    """`Database.transaction()`: joins the task's open transaction, or opens one."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._outer: AbstractAsyncContextManager[Tx] | None = None
        self._token: contextvars.Token[Tx | None] | None = None

    async def __aenter__(self) -> Tx:
        current = self._db._tx.get()
        if current is not None:
            return current
        self._outer = self._db._begin()
        tx = await self._outer.__aenter__()
        self._token = self._db._tx.set(tx)
        return tx

    async def __aexit__(self, *exc: Any) -> bool | None:
        if self._outer is None:
            return None
        assert self._token is not None
        self._db._tx.reset(self._token)
        return await self._outer.__aexit__(*exc)
