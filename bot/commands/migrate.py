"""Bring the database schema up to date, once, for rolling deploys (the server also does it at start): migrate."""

from __future__ import annotations

import argparse

from bot.config import Config
from bot.persistence.database import Database


async def run(config: Config, argv: list[str]) -> int:
    """Apply the pending database migrations and say which are in place."""
    argparse.ArgumentParser(prog="run.py migrate", description=run.__doc__).parse_args(argv)
    db = Database.create(config.database_url)
    await db.open(migrate=False)
    try:
        applied = await db.migrate()
        versions = db.applied_migrations
    finally:
        await db.close()
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
    print(f"{db.description}: {done}; schema up to date (migrations {', '.join(map(str, versions))}).")
    return 0
