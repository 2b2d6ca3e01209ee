"""Copy an SQLite installation into PostgreSQL: copy-sqlite-to-postgres SQLITE_FILE [POSTGRES_URL] [--force].

Every table, parents before children, in ONE PostgreSQL transaction: either all of it is there, or
nothing. Ids are kept, and each identity sequence is moved past the highest id copied. The
full-text indexes need nothing: on PostgreSQL they are generated columns, computed as the rows go
in. The SQLite file is only read. Secrets (the stored OpenAI key) are copied as they are stored,
encrypted: the servers on PostgreSQL need the same BOT_SECRET_KEY, or the same `secret.key` file in
their data directory, to read them.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bot.configuration.config import Config
from bot.persistence.database import Database, DatabaseUnavailable
from bot.persistence.migrations import load_migrations
from bot.persistence.postgres import PostgresDatabase, redact_url

BATCH = 5000
# SQLite tables that PostgreSQL does not have: its migrations' bookkeeping and FTS5's own tables
# (the PostgreSQL index is a generated column).
_NOT_COPIED = {"schema_migrations"}


class CopyError(Exception):
    """The copy cannot be done; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a PostgreSQL table that the copy writes."""

    name: str
    type: str  # format_type(): bigint, integer, double precision, text …
    source: str  # the SQLite expression that reads it (a column name, or rowid)


@dataclass(frozen=True, slots=True)
class Table:
    """A table to copy, with the columns written and its identity column (if any)."""

    name: str
    columns: tuple[Column, ...]
    identity: str | None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py copy-sqlite-to-postgres",
        description="Copy an installation's SQLite database (e.g. data/bot.db) into an empty PostgreSQL "
                    "database, in one transaction. Stop the server first.",
    )
    parser.add_argument("sqlite_file", help="the SQLite database, e.g. data/bot.db")
    parser.add_argument("postgres_url", nargs="?",
                        help="postgresql://user:password@host:5432/dbname (default: BOT_DATABASE_URL)")
    parser.add_argument("--force", action="store_true",
                        help="the PostgreSQL database has rows already: replace them all")
    return parser


def _open_sqlite(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise CopyError(f"there is no SQLite database at {path} (the server keeps it in its data directory, "
                        "by default data/bot.db)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        # One read transaction for every table: the copy is one moment of the database.
        conn.execute("BEGIN")
        version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise CopyError(f"{path} is not a database of this server ({exc})") from exc
    latest = load_migrations("sqlite")[-1][0]
    if version != latest:
        conn.close()
        if version is None or version < latest:
            raise CopyError(f"{path} is at schema version {version}, this server's is {latest}: bring it up to "
                            f"date first with `python run.py migrate --data-dir {path.parent}` "
                            "(BOT_DATABASE_URL unset)")
        raise CopyError(f"{path} is at schema version {version}, newer than this server's {latest}: "
                        "copy it with the version of the server that wrote it")
    return conn


async def _tables(conn: asyncpg.Connection, sqlite: sqlite3.Connection) -> list[Table]:
    """The PostgreSQL tables, parents before children, with the columns both sides have."""
    names = [r[0] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")]
    names = [n for n in names if n not in _NOT_COPIED]
    edges = await conn.fetch(
        "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = current_schema()::regnamespace")
    ordered = _parents_first(names, [(r["parent"], r["child"]) for r in edges])
    tables = []
    for name in ordered:
        rows = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type, attidentity <> '' AS is_identity "
            "FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
            "AND attgenerated = '' ORDER BY attnum", name)
        source = {r[1] for r in sqlite.execute(f"PRAGMA table_info({name})")}
        if not source:
            raise CopyError(f"the SQLite database has no table {name}: is it a database of this server?")
        columns = []
        for r in rows:
            if r["attname"] in source:
                columns.append(Column(r["attname"], r["type"], r["attname"]))
            elif r["is_identity"]:  # FTS5 tables have no id column: their rowid is it
                columns.append(Column(r["attname"], r["type"], "rowid"))
            else:
                raise CopyError(f"{name}.{r['attname']} exists in PostgreSQL but not in the SQLite database")
        identity = next((r["attname"] for r in rows if r["is_identity"]), None)
        tables.append(Table(name, tuple(columns), identity))
    return tables


def _parents_first(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[str]:
    """Tables in an order where every table comes after the tables it references."""
    parents = {n: {p for p, c in edges if c == n and p != n and p in names} for n in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and parents[n] <= set(ordered)]
        if not ready:
            raise CopyError(f"the foreign keys between {sorted(set(names) - set(ordered))} form a cycle")
        ordered += ready
    return ordered


def _converter(column: Column, notes: dict[str, int]) -> Callable[[Any], Any]:
    """SQLite stores any value in any column; PostgreSQL (and asyncpg) want the column's own type."""
    where = column.name

    if column.type in ("bigint", "integer", "smallint"):
        def to_int(value: Any) -> Any:
            if value is None or isinstance(value, int):
                return value
            if isinstance(value, float) and not value.is_integer():
                notes[f"{where}: decimals dropped"] = notes.get(f"{where}: decimals dropped", 0) + 1
            return int(value)
        return to_int
    if column.type in ("double precision", "real"):
        return lambda value: value if value is None else float(value)
    if column.type == "text":
        def to_text(value: Any) -> Any:
            if value is None:
                return None
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if "\x00" in text:  # PostgreSQL text cannot hold NUL (the backend does the same)
                notes[f"{where}: NUL replaced"] = notes.get(f"{where}: NUL replaced", 0) + 1
                text = text.replace("\x00", "\ufffd")
            return text
        return to_text
    return lambda value: value


def _batches(sqlite: sqlite3.Connection, table: Table, notes: dict[str, int]) -> Iterator[list[tuple[Any, ...]]]:
    convert = [_converter(c, notes) for c in table.columns]
    select = ", ".join(c.source for c in table.columns)
    cursor = sqlite.execute(f"SELECT {select} FROM {table.name} ORDER BY rowid")
    while batch := cursor.fetchmany(BATCH):
        yield [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in batch]


async def copy(sqlite_path: Path, url: str, *, force: bool, out: Callable[[str], None] = print) -> dict[str, int]:
    """Copy every table; returns the rows per table (checked against the source). Raises CopyError."""
    sqlite = _open_sqlite(sqlite_path)
    target = Database.create(url)
    if not isinstance(target, PostgresDatabase):
        raise CopyError(f"the target must be a postgresql:// URL, not {url.split(':', 1)[0]!r}")
    try:
        await target.open()  # migrates an empty database to this server's schema
    except DatabaseUnavailable as exc:
        sqlite.close()
        raise CopyError(f"{exc}. Is the server running, and the URL right?") from exc
    try:
        try:
            conn = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError) as exc:
            raise CopyError(f"cannot connect to {target.description}: {exc}") from exc
        try:
            tables = await _tables(conn, sqlite)
            names = [t.name for t in tables]
            existing = {t: n for t, n in (await target.table_counts(names)).items() if n}
            if existing and not force:
                raise CopyError(f"{target.description} already holds rows ({_list(existing)}): copy into an empty "
                                "database, or pass --force to replace them")
            notes: dict[str, int] = {}
            async with conn.transaction():
                if existing:
                    await conn.execute(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")
                for table in tables:
                    columns = [c.name for c in table.columns]
                    try:
                        for batch in _batches(sqlite, table, notes):
                            await conn.copy_records_to_table(table.name, records=batch, columns=columns)
                    except (ValueError, TypeError, asyncpg.PostgresError) as exc:
                        raise CopyError(f"{table.name}: a row does not fit PostgreSQL ({exc})") from exc
                    expected = int(sqlite.execute(f"SELECT COUNT(*) FROM {table.name}").fetchone()[0])
                    landed = int(await conn.fetchval(f"SELECT COUNT(*) FROM {table.name}"))
                    if landed != expected:  # checked before the commit: a mismatch rolls everything back
                        raise CopyError(f"{table.name}: {expected} rows in SQLite, {landed} in PostgreSQL")
                    if table.identity is not None:
                        # The next id is past every copied one (an empty table starts at 1).
                        await conn.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{table.identity}'), "
                            f"COALESCE(MAX({table.identity}), 0) + 1, false) FROM {table.name}")
        finally:
            await conn.close()
        copied = dict(await target.table_counts(names))
        source = {t: int(sqlite.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in names}
        wrong = {t: (source[t], copied[t]) for t in names if source[t] != copied[t]}
    finally:
        sqlite.close()
        await target.close()
    for name in names:
        out(f"  {name:<22} {copied[name]:>9}")
    for note, count in sorted(notes.items()):
        out(f"  note: {note} in {count} row(s)")
    if wrong:  # after the commit: something else is writing to the target
        raise CopyError("the copy was committed, but the row counts differ now (is a server running on it?): "
                        + ", ".join(f"{t} {a} ≠ {b}" for t, (a, b) in wrong.items()))
    return copied


def _list(counts: dict[str, int]) -> str:
    shown = ", ".join(f"{t}: {n}" for t, n in list(counts.items())[:4])
    return shown + (", …" if len(counts) > 4 else "")


async def run(config: Config, argv: list[str]) -> int:
    """Copy an SQLite database (data/bot.db) into PostgreSQL, in one transaction."""
    args = _parser().parse_args(argv)
    url = args.postgres_url or (config.database if config.database.startswith(("postgres://", "postgresql://"))
                                else "")
    if not url:
        print("give the PostgreSQL URL (postgresql://user:password@host:5432/dbname), or set BOT_DATABASE_URL",
              file=sys.stderr)
        return 2
    path = Path(args.sqlite_file)
    print(f"copying {path} into {redact_url(url)}")
    try:
        copied = await copy(path, url, force=args.force)
    except CopyError as exc:
        committed = "committed" in str(exc)
        print(f"{'' if committed else 'nothing was copied: '}{exc}", file=sys.stderr)
        return 1
    print(f"copied {sum(copied.values())} rows in {len(copied)} tables; every count matches the SQLite file.")
    print("The full-text indexes (products, knowledge base pages) were built as the rows went in.")
    print("Stored secrets were copied encrypted: run the servers with the same BOT_SECRET_KEY, or copy "
          f"{path.parent / 'secret.key'} into their data directory. Uploaded files (the knowledge base PDF in "
          f"{path.parent / 'kb'}) stay where they are. Then set BOT_DATABASE_URL and start the servers.")
    return 0
