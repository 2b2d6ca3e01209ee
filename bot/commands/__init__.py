"""Maintenance commands of run.py (`python run.py COMMAND ...`), one module each.

Each module defines `async def run(config: Config, argv: list[str]) -> int` and a one-line docstring
that `python run.py --help` shows.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "migrate": "bot.commands.migrate",
    "import-products": "bot.commands.import_products",
    "add-user": "bot.commands.add_user",
    "import-frappe-sessions": "bot.commands.import_frappe",
    "copy-sqlite-to-postgres": "bot.commands.copy_sqlite_to_postgres",
}
