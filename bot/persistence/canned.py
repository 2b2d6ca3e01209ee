"""Canned replies: texts the team keeps on the settings page and inserts with `/shortcut` in the reply box.

A text may hold variables, filled in for the open conversation: `{{name}}` (the contact's name) and
`{{order_code}}` (the conversation's latest order). A variable with no value, or one that does not
exist, stays as it is written, so the operator sees it before sending.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bot.persistence.database import Database, IntegrityError, Record, row_to

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SHORTCUT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_TEXT = 4096
KNOWN_VARIABLES = ("name", "order_code")


class CannedError(ValueError):
    """A canned reply that cannot be saved; the message says why."""


@dataclass(frozen=True, slots=True)
class CannedReply:
    """One canned reply."""

    id: int
    shortcut: str
    text: str
    updated_at: float
    updated_by: str | None

    @classmethod
    def from_row(cls, row: Record) -> CannedReply:
        """Build from a canned_replies row."""
        return row_to(cls, row)


def fill(text: str, values: Mapping[str, str | None]) -> str:
    """The text with the variables that have a value filled in; the others left visible."""
    def replace(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        return value if value else match.group(0)

    return VARIABLE.sub(replace, text)


def check(shortcut: str, text: str) -> tuple[str, str]:
    """A shortcut and text as stored; CannedError with a readable reason otherwise."""
    cut = shortcut.strip().lstrip("/").lower()
    if not SHORTCUT.match(cut):
        raise CannedError("A shortcut has 1 to 32 lower-case letters, digits, - or _, like “thanks” or "
                          "“opening-hours”.")
    body = text.strip()
    if not body:
        raise CannedError("Write the reply's text.")
    if len(body) > MAX_TEXT:
        raise CannedError(f"A canned reply has at most {MAX_TEXT} characters (WhatsApp's limit).")
    return cut, body


class CannedReplyRepo:
    """The team's canned replies, by shortcut."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[CannedReply]:
        """Every canned reply, by shortcut."""
        rows = await self.db.fetch("SELECT * FROM canned_replies ORDER BY shortcut")
        return [CannedReply.from_row(r) for r in rows]

    async def save(self, shortcut: str, text: str, *, user: str | None, reply_id: int | None = None) -> CannedReply:
        """Add a reply, or change one (by id); CannedError for a bad or taken shortcut."""
        cut, body = check(shortcut, text)
        now = time.time()
        try:
            if reply_id is None:
                new_id = await self.db.insert(
                    "INSERT INTO canned_replies (shortcut, text, created_at, updated_at, updated_by) "
                    "VALUES ($1, $2, $3, $3, $4) RETURNING id", cut, body, now, user)
            else:
                changed = await self.db.execute(
                    "UPDATE canned_replies SET shortcut = $1, text = $2, updated_at = $3, updated_by = $4 "
                    "WHERE id = $5",
                    cut, body, now, user, reply_id)
                if not changed:
                    raise CannedError("That canned reply no longer exists.")
                new_id = reply_id
        except IntegrityError:
            raise CannedError(f"There is already a canned reply called /{cut}.") from None
        row = await self.db.fetchrow("SELECT * FROM canned_replies WHERE id = $1", new_id)
        assert row is not None
        return CannedReply.from_row(row)

    async def delete(self, reply_id: int) -> bool:
        """Delete one; False when there was none."""
        return bool(await self.db.execute("DELETE FROM canned_replies WHERE id = $1", reply_id))
