"""Apply the database's pending migrations, print them, and exit: migrate.

The server migrates at start-up too; this is for deployments that run several server processes on
one PostgreSQL database and want the schema ready before any of them starts (they may still start
together: migrations take an advisory lock, so each is applied once).
"""

from __future__ import annotations

import argparse
import sys

from bot.configuration.config import Config
from bot.persistence.database import Database, DatabaseUnavailable
from bot.persistence.migrations import migration_names


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="run.py migrate",
        description="Apply pending migrations to the database (BOT_DATABASE_URL, or bot.db in the data "
                    "directory) and exit.",
    )


async def run(config: Config, argv: list[str]) -> int:
    """Apply pending migrations to the database and exit."""
    _parser().parse_args(argv)
    db = Database.create(config.database_url)
    try:
        await db.open(migrate=False)
    except DatabaseUnavailable as exc:
        print(f"cannot open the database: {exc}", file=sys.stderr)
        return 1
    try:
        applied = await db.migrate()
    except Exception as exc:  # e.g. no permission to create the unaccent extension: say what, not a traceback
        print(f"the migrations could not be applied: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await db.close()
    names = migration_names(db.dialect)
    latest = db.applied_migrations[-1] if db.applied_migrations else 0
    if applied:
        print(f"applied {len(applied)} migration(s) to {db.description}:")
        for version in applied:
            print(f"  {names.get(version, version)}")
    else:
        print(f"{db.description} is up to date: nothing to apply")
    print(f"schema version {latest}")
    return 0
