"""Labels on conversations: made on the fly by operators, with an optional colour."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from bot.persistence.database import Database, IntegrityError, Record, Stmt, row_to

MAX_NAME = 40
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class LabelError(ValueError):
    """A label name or colour that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Label:
    """One label, with how many (non-test) conversations carry it when listed."""

    id: int
    name: str
    color: str | None
    conversations: int = 0

    @classmethod
    def from_row(cls, row: Record) -> Label:
        """Build from a labels row (plus an optional `conversations` count)."""
        return row_to(cls, row)


def clean_name(name: object) -> str:
    """A label name as stored: trimmed, inner whitespace collapsed; LabelError when unusable."""
    if not isinstance(name, str) or not " ".join(name.split()):
        raise LabelError('a label needs a "name" of 1 to 40 characters')
    cleaned = " ".join(name.split())
    if len(cleaned) > MAX_NAME:
        raise LabelError(f"a label name has at most {MAX_NAME} characters")
    return cleaned


def clean_color(color: object) -> str | None:
    """None, or a colour as #rrggbb; LabelError otherwise."""
    if color is None or color == "":
        return None
    if not isinstance(color, str) or not COLOR.match(color):
        raise LabelError('"color" is a colour like "#1e88e5" (or leave it out)')
    return color.lower()


class LabelRepo:
    """Labels and which conversations carry them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Label]:
        """Every label by name, with its number of conversations (test chats not counted)."""
        # CROSS JOIN: SQLite then goes from the label's conversations to theirs, not through every conversation.
        rows = await self.db.fetch(
            "SELECT l.id, l.name, l.color, (SELECT COUNT(*) FROM conversation_labels cl CROSS JOIN conversations c "
            "WHERE cl.label_id = l.id AND c.id = cl.conversation_id AND c.is_test = 0) AS conversations "
            "FROM labels l ORDER BY l.name_key")
        return [Label.from_row(r) for r in rows]

    async def get(self, label_id: int) -> Label | None:
        """One label by id."""
        row = await self.db.fetchrow("SELECT id, name, color FROM labels WHERE id = $1", label_id)
        return None if row is None else Label.from_row(row)

    async def ensure(self, name: object, color: object = None, *, user: str | None = None) -> Label:
        """The label with this name (any case), made now if there is none; a colour given replaces the old one."""
        cleaned, shade = clean_name(name), clean_color(color)
        key = cleaned.lower()
        rows = (await self.db.write([Stmt(
            "INSERT INTO labels (name, name_key, color, created_at, created_by) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (name_key) DO UPDATE SET color = COALESCE(excluded.color, labels.color) "
            "RETURNING id, name, color",
            (cleaned, key, shade, time.time(), user), rows=True)]))[0]
        return Label.from_row(rows[0])

    async def attach(self, conversation_id: int, label_id: int, *, user: str | None = None) -> None:
        """Put a label on a conversation (again is fine)."""
        try:
            await self.db.execute(
                "INSERT INTO conversation_labels (conversation_id, label_id, created_at, created_by) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id, label_id) DO NOTHING",
                conversation_id, label_id, time.time(), user)
        except IntegrityError as exc:  # the label was deleted meanwhile
            raise LookupError(f"no label with id {label_id}") from exc

    async def detach(self, conversation_id: int, label_id: int) -> bool:
        """Take a label off a conversation; False when it was not on it."""
        return bool(await self.db.execute(
            "DELETE FROM conversation_labels WHERE conversation_id = $1 AND label_id = $2", conversation_id, label_id))

    async def of(self, conversation_id: int) -> list[Label]:
        """The labels of one conversation, by name."""
        rows = await self.db.fetch(
            "SELECT l.id, l.name, l.color FROM conversation_labels cl JOIN labels l ON l.id = cl.label_id "
            "WHERE cl.conversation_id = $1 ORDER BY l.name_key", conversation_id)
        return [Label.from_row(r) for r in rows]

    async def delete(self, label_id: int) -> bool:
        """Delete a label everywhere; False when there was none."""
        return bool(await self.db.execute("DELETE FROM labels WHERE id = $1", label_id))
