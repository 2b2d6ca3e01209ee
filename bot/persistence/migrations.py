"""Numbered schema upgrades, one SQL file each in bot/persistence/sql/ (NNNN_name.sql).

Append only: never edit a file that has shipped; add the next number instead.
"""

from __future__ import annotations

from importlib import resources


def load_migrations() -> list[tuple[int, str]]:
    """Every migration as (number, SQL), in order."""
    folder = resources.files("bot.persistence") / "sql"
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
        raise RuntimeError(f"two migrations share a number: {numbers}")
    return found


MIGRATIONS = load_migrations()
