"""Numbered schema upgrades per dialect: bot/persistence/sql/<dialect>/NNNN_name.sql.

Every number exists for every dialect and means the same change. Append only: never edit a file
that has shipped; add the next number instead.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_migrations(dialect: str) -> tuple[tuple[int, str], ...]:
    """Every migration of a dialect as (number, SQL), in order."""
    folder = resources.files("bot.persistence") / "sql" / dialect
    found: list[tuple[int, str]] = []
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        number = int(name.split("_", 1)[0])
        found.append((number, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _ in found]
    if len(numbers) != len(set(numbers)):
        raise RuntimeError(f"two {dialect} migrations share a number: {numbers}")
    return tuple(found)


@cache
def migration_names(dialect: str) -> dict[int, str]:
    """Each migration's file name without .sql (0001_core …), by number."""
    folder = resources.files("bot.persistence") / "sql" / dialect
    return {int(e.name.split("_", 1)[0]): e.name.removesuffix(".sql")
            for e in folder.iterdir() if e.name.endswith(".sql")}
