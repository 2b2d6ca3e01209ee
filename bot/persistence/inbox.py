"""The durable inbox (one row per customer message, unique on wamid) and the errors table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bot.domain.conversation import ConversationKey, InboundMessage, MessageDetail, StoredInbound
from bot.persistence.database import Database, Record, Stmt, in_list, marks, row_to, values_stmts

_COLUMNS = 12
_INSERT_SQL = (
    "INSERT INTO inbox (wamid, phone_number_id, customer_id, wa_id, user_id, profile_name, type, text, payload, "
    "sent_at, received_at, status) VALUES {rows} ON CONFLICT (wamid) DO NOTHING RETURNING id, wamid"
)


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
    sent_at: int | None = None

    @classmethod
    def from_row(cls, row: Record) -> InboxRow:
        """Build from a `SELECT *` row."""
        return row_to(cls, row)

    @property
    def key(self) -> ConversationKey:
        """The conversation of this message."""
        return ConversationKey(self.phone_number_id, self.customer_id)

    def stored(self, detail_of: Callable[[dict[str, Any]], MessageDetail | None] | None = None) -> StoredInbound:
        """The neutral message the conversation's actor works on; `detail_of` reads the channel's details back."""
        try:
            payload = orjson.loads(self.payload)
        except orjson.JSONDecodeError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        message = InboundMessage(
            wamid=self.wamid, phone_number_id=self.phone_number_id, customer_id=self.customer_id, wa_id=self.wa_id,
            user_id=self.user_id, profile_name=self.profile_name, type=self.type, text=self.text,
            payload=payload, timestamp=self.sent_at, detail=detail_of(payload) if detail_of else None,
        )
        return StoredInbound(self.id, message, self.received_at)


def encode_payload(payload: Any) -> str:
    """The payload as JSON text. orjson stops at 254 levels of nesting; the stdlib goes deeper; else a note."""
    try:
        return orjson.dumps(payload).decode()
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:
        return json.dumps(payload)
    except (RecursionError, ValueError, TypeError):
        return '{"unstored": "the payload was nested too deeply to keep"}'


def insert_stmts(messages: Sequence[InboundMessage], *, now: float, status: str = "pending") -> list[Stmt]:
    """Statements that store messages (repeats by wamid skipped); each returns (id, wamid) of new rows."""
    # One statement per chunk, not per message: the ingest group-commits many webhooks into one call here.
    return values_stmts(_INSERT_SQL, [
        (msg.wamid, msg.phone_number_id, msg.customer_id, msg.wa_id, msg.user_id, msg.profile_name, msg.type,
         msg.text, encode_payload(msg.payload), msg.timestamp, now, status) for msg in messages], returning=True)


def new_rows(messages: Sequence[InboundMessage], results: Sequence[Any], *, now: float) -> list[StoredInbound]:
    """Match the RETURNING rows of `insert_stmts` back to their messages (RETURNING promises no order)."""
    ids: dict[str, int] = {}
    for rows in results:
        for row in rows:
            ids[row[1]] = row[0]
    stored: list[StoredInbound] = []
    for msg in messages:
        inbox_id = ids.pop(msg.wamid, None)  # pop: a wamid twice in one call is new only once
        if inbox_id is not None:
            stored.append(StoredInbound(inbox_id, msg, now))
    return stored


# The closing statements test `status || ''`, not `status`: then no plan can use the partial index
# of pending rows (PostgreSQL cannot prove its predicate from that expression), only the primary key.
# Without statistics the planner takes the pending rows for 0.5 % of the table and preferred walking
# all of them, and filtering by id, to eight primary-key lookups: 2.0 instead of 0.9 ms per
# close of eight rows in a micro-benchmark.
_STILL_PENDING = "(status || '') = 'pending'"


def fence_stmt(ids: Sequence[int]) -> Stmt:
    """Compare-and-set: every row is still pending (the unit that carries it is undone otherwise)."""
    places, args = in_list(ids, 1)
    return Stmt(f"UPDATE inbox SET attempts = attempts WHERE id IN ({places}) AND {_STILL_PENDING}",
                args, expect=len(set(ids)))


def close_stmt(ids: Sequence[int], status: str, *, error: str | None = None, now: float | None = None,
               fence: bool = False) -> Stmt:
    """Close pending rows: 'done' (answered), 'ignored' (no reply by rule) or 'failed' (with the reason).

    `fence`: also the compare-and-set of `fence_stmt`, in the same statement: unless every row was
    still pending, the unit that carries it is undone.
    """
    places, args = in_list(ids, 4)
    return Stmt(
        f"UPDATE inbox SET status = $1, last_error = COALESCE($2, last_error), handled_at = $3 "
        f"WHERE id IN ({places}) AND {_STILL_PENDING}",
        (status, error, now or time.time(), *args), expect=len(set(ids)) if fence else None,
    )


class InboxRepo:
    """Inbox rows move pending → done | ignored | failed; nothing is ever deleted by the pipeline."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, messages: Sequence[InboundMessage], *, status: str = "pending") -> list[StoredInbound]:
        """Store messages as one unit; returns the new rows (repeats are skipped)."""
        if not messages:
            return []
        now = time.time()
        results = await self.db.write(insert_stmts(messages, now=now, status=status))
        return new_rows(messages, results, now=now)

    async def get_many(self, ids: Sequence[int]) -> list[InboxRow]:
        """Rows by id, in arrival order."""
        if not ids:
            return []
        rows = await self.db.fetch(f"SELECT * FROM inbox WHERE id IN ({marks(len(ids))}) ORDER BY id", *ids)
        return [InboxRow.from_row(r) for r in rows]

    async def pending(self, key: ConversationKey | None = None) -> list[InboxRow]:
        """Rows still waiting for a turn, oldest first (of one conversation, or all)."""
        if key is None:
            rows = await self.db.fetch("SELECT * FROM inbox WHERE status = 'pending' ORDER BY id")
        else:
            rows = await self.db.fetch(
                "SELECT * FROM inbox WHERE status = 'pending' AND phone_number_id = $1 AND customer_id = $2 "
                "ORDER BY id", key.business, key.customer,
            )
        return [InboxRow.from_row(r) for r in rows]

    async def pending_count(self) -> int:
        """How many rows wait for a turn."""
        return int(await self.db.fetchval("SELECT COUNT(*) FROM inbox WHERE status = 'pending'") or 0)

    async def set_status(self, ids: Sequence[int], status: str, *, error: str | None = None) -> None:
        """Close rows on their own (outside a turn's unit)."""
        if ids:
            await self.db.write([close_stmt(ids, status, error=error)])

    @staticmethod
    def text_stmt(inbox_id: int, text: str) -> Stmt:
        """Keep what the server understood of a message (a voice note's transcript)."""
        return Stmt("UPDATE inbox SET text = $1 WHERE id = $2", (text, inbox_id))

    @staticmethod
    def attempt_stmt(ids: Sequence[int], error: str) -> Stmt:
        """Count one failed try of these rows, keeping the reason."""
        places, args = in_list(ids, 2)
        return Stmt(f"UPDATE inbox SET attempts = attempts + 1, last_error = $1 WHERE id IN ({places})",
                    (error, *args))

    async def since(self, key: ConversationKey, since: float) -> list[InboxRow]:
        """The customer's messages received since a time (for resuming after a pause)."""
        rows = await self.db.fetch(
            "SELECT * FROM inbox WHERE phone_number_id = $1 AND customer_id = $2 AND received_at >= $3 ORDER BY id",
            key.business, key.customer, since,
        )
        return [InboxRow.from_row(r) for r in rows]


def error_stmt(type_: str, message: str, *, session_id: str | None = None, now: float | None = None) -> Stmt:
    """Keep one error occurrence (part of a unit)."""
    return Stmt("INSERT INTO errors (type, message, session_id, created_at) VALUES ($1, $2, $3, $4)",
                (type_, message[:2000], session_id, now or time.time()))


class ErrorRepo:
    """Errors a person should see on the diagnostics page, by type."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.listener: Callable[[str], None] | None = None

    def stmt(self, type_: str, message: str, *, session_id: str | None = None) -> Stmt:
        """One error occurrence as part of a unit (the listener counts it now)."""
        if self.listener is not None:
            self.listener(type_)
        return error_stmt(type_, message, session_id=session_id)

    async def record(self, type_: str, message: str, *, session_id: str | None = None) -> None:
        """Keep one error occurrence."""
        await self.db.write([self.stmt(type_, message, session_id=session_id)])

    async def recent(self, window_seconds: float = 7200) -> list[dict[str, object]]:
        """Errors of the last window, grouped by type and message, newest first."""
        rows = await self.db.fetch(
            "SELECT type, message, COUNT(*) AS count, MAX(created_at) AS last_at FROM errors "
            "WHERE created_at >= $1 GROUP BY type, message ORDER BY last_at DESC LIMIT 50",
            time.time() - window_seconds,
        )
        return [dict(r) for r in rows]
