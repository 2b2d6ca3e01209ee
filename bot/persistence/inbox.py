"""The durable inbox (one row per customer message, unique on wamid) and the errors table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from bot.persistence.db import Database, Row, row_to
from bot.whatsapp.events import InboundMessage

_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_CHUNK = 500  # 12 parameters a row: well under SQLite's 32,766 variables per statement


@dataclass(frozen=True, slots=True)
class InboxRow:
    """A stored customer message."""

    id: int
    wamid: str
    phone_number_id: str
    customer_id: str
    wa_id: str | None
    user_id: str | None
    profile_name: str | None
    type: str
    text: str | None
    payload: str
    status: str
    attempts: int
    received_at: float

    @classmethod
    def from_row(cls, row: Row) -> InboxRow:
        """Build from a `SELECT *` row."""
        return row_to(cls, row)


class InboxRepo:
    """Inbox rows move pending → done | ignored | failed; nothing is ever deleted by the pipeline."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self, messages: Sequence[InboundMessage], *, status: str = "pending"
    ) -> list[tuple[int, InboundMessage]]:
        """Store messages in one transaction; returns (id, message) for new rows (repeats are skipped)."""
        now = time.time()
        new_rows: list[tuple[int, InboundMessage]] = []
        async with self.db.transaction() as conn:
            # One statement per chunk, not per message: each statement is a round trip to the database
            # thread, and the ingest group-commits many webhooks into one call here.
            for start in range(0, len(messages), _INSERT_CHUNK):
                chunk = messages[start : start + _INSERT_CHUNK]
                params: list[object] = []
                for msg in chunk:
                    params += (
                        msg.wamid, msg.phone_number_id, msg.customer_id, msg.wa_id, msg.user_id,
                        msg.profile_name, msg.type, msg.text, orjson.dumps(msg.payload).decode(),
                        msg.timestamp, now, status,
                    )
                # RETURNING lists only the rows OR IGNORE inserted, in no promised order: match by wamid.
                inserted = await conn.execute_fetchall(
                    "INSERT OR IGNORE INTO inbox (wamid, phone_number_id, customer_id, wa_id, user_id, "
                    "profile_name, type, text, payload, sent_at, received_at, status) VALUES "
                    + ",".join([_ROW] * len(chunk)) + " RETURNING id, wamid",
                    params,
                )
                ids = {row[1]: row[0] for row in inserted}
                for msg in chunk:
                    inbox_id = ids.pop(msg.wamid, None)  # pop: a wamid twice in one call is new only once
                    if inbox_id is not None:
                        new_rows.append((inbox_id, msg))
        return new_rows

    async def get_many(self, ids: Sequence[int]) -> list[InboxRow]:
        """Rows by id, in arrival order."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = await self.db.fetchall(f"SELECT * FROM inbox WHERE id IN ({marks}) ORDER BY id", tuple(ids))
        return [InboxRow.from_row(r) for r in rows]

    async def pending(self) -> list[InboxRow]:
        """Every row still waiting for a turn, oldest first."""
        rows = await self.db.fetchall("SELECT * FROM inbox WHERE status = 'pending' ORDER BY id")
        return [InboxRow.from_row(r) for r in rows]

    async def pending_count(self) -> int:
        """How many rows wait for a turn."""
        return int(await self.db.scalar("SELECT COUNT(*) FROM inbox WHERE status = 'pending'") or 0)

    async def set_status(self, ids: Sequence[int], status: str, *, error: str | None = None) -> None:
        """Close rows: 'done' (answered), 'ignored' (no reply by rule) or 'failed' (with the reason)."""
        if not ids:
            return
        now = time.time()
        await self.db.executemany(
            "UPDATE inbox SET status = ?, last_error = COALESCE(?, last_error), handled_at = ? "
            "WHERE id = ? AND status = 'pending'",
            [(status, error, now, i) for i in ids],
        )

    async def set_text(self, inbox_id: int, text: str) -> None:
        """Keep what the server understood of a message (a voice note's transcript)."""
        await self.db.execute("UPDATE inbox SET text = ? WHERE id = ?", (text, inbox_id))

    async def record_attempt(self, ids: Sequence[int], error: str) -> None:
        """Count one failed try of these rows, keeping the reason."""
        await self.db.executemany(
            "UPDATE inbox SET attempts = attempts + 1, last_error = ? WHERE id = ?", [(error, i) for i in ids]
        )

    async def since(self, phone_number_id: str, customer_id: str, since: float) -> list[InboxRow]:
        """The customer's messages received since a time (for resuming after a pause)."""
        rows = await self.db.fetchall(
            "SELECT * FROM inbox WHERE phone_number_id = ? AND customer_id = ? AND received_at >= ? ORDER BY id",
            (phone_number_id, customer_id, since),
        )
        return [InboxRow.from_row(r) for r in rows]


class ErrorRepo:
    """Errors a person should see on the diagnostics page, by type."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.listener: Callable[[str], None] | None = None

    async def record(self, type_: str, message: str, *, session_id: str | None = None) -> None:
        """Keep one error occurrence."""
        await self.db.execute(
            "INSERT INTO errors (type, message, session_id, created_at) VALUES (?, ?, ?, ?)",
            (type_, message[:2000], session_id, time.time()),
        )
        if self.listener is not None:
            self.listener(type_)

    async def recent(self, window_seconds: float = 7200) -> list[dict[str, object]]:
        """Errors of the last window, grouped by type and message, newest first."""
        rows = await self.db.fetchall(
            "SELECT type, message, COUNT(*) AS count, MAX(created_at) AS last_at FROM errors "
            "WHERE created_at >= ? GROUP BY type, message ORDER BY last_at DESC LIMIT 50",
            (time.time() - window_seconds,),
        )
        return [dict(r) for r in rows]
