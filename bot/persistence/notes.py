"""Private notes in a conversation's thread: for the team only, never sent and never shown to the model."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.persistence.database import Database, Record, row_to

MAX_NOTE = 4000


@dataclass(frozen=True, slots=True)
class Note:
    """One note, with its author and time."""

    id: int
    conversation_id: int
    author: str
    text: str
    created_at: float

    @classmethod
    def from_row(cls, row: Record) -> Note:
        """Build from a notes row."""
        return row_to(cls, row)


class NoteRepo:
    """Notes by conversation."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, conversation_id: int, author: str, text: str) -> Note:
        """Write a note; returns it."""
        note_id = await self.db.insert(
            "INSERT INTO notes (conversation_id, author, text, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            conversation_id, author, text, time.time())
        row = await self.db.fetchrow("SELECT * FROM notes WHERE id = $1", note_id)
        assert row is not None
        return Note.from_row(row)

    async def of(self, conversation_id: int) -> list[Note]:
        """A conversation's notes, oldest first."""
        rows = await self.db.fetch("SELECT * FROM notes WHERE conversation_id = $1 ORDER BY id", conversation_id)
        return [Note.from_row(r) for r in rows]
