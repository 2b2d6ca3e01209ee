"""Bring the database schema up to date (the server also does this when it starts): migrate."""

from __future__ import annotations

import argparse

from bot.config import Config
from bot.persistence.db import Database


async def run(config: Config, argv: list[str]) -> int:
    """Apply the pending database migrations and say which are in place."""
    argparse.ArgumentParser(prog="run.py migrate", description=run.__doc__).parse_args(argv)
    db = Database(config.db_path)
    await db.open()  # opening applies whatever is pending, in order, each in its own transaction
    try:
        applied = db.applied_migrations
    finally:
        await db.close()
    print(f"{config.db_path}: schema up to date (migrations {', '.join(map(str, applied))}).")
    return 0
