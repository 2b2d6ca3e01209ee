"""The outbox: a row is written before a send and marked after it, so a crash never sends twice.

Only the conversation's actor moves a row along queued → sending → sent | failed | unknown, and every
move is a compare-and-set on the row's current status (`Stmt.expect`). Delivery receipts, applied
by the ingest, only ever move a row that already has a wamid forward (sent → delivered → read).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bot.domain.conversation import ConversationKey, OutboundMessage
from bot.persistence.database import Database, Record, Stmt, row_to

# Status order for delivery receipts. Meta does not promise order, so a late 'delivered' must
# never undo a 'read'. 'failed' may only replace states before delivery.
RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4, "failed": 5, "unknown": 1}


def _rank_sql(column: str) -> str:
    return (
        f"(CASE {column} WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'unknown' THEN 1 WHEN 'sent' THEN 2 "
        f"WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 WHEN 'failed' THEN 5 ELSE 0 END)"
    )


_RANK = _rank_sql("outbox.status")
_ORPHAN_RANK = _rank_sql("o.status")
# A receipt moves a row forward only; 'failed' only before delivery (after it, Meta contradicts itself).
_RECEIPT_SQL = (
    f"UPDATE outbox SET status = $2, error_code = COALESCE($3, error_code), error_reason = COALESCE($4, error_reason), "
    f"updated_at = $5 WHERE wamid = $1 AND {_RANK} < $6 AND {_RANK} < $7"
)
_PARK_SQL = (
    "INSERT INTO orphan_statuses (wamid, status, error_code, error_reason, received_at) "
    "SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE wamid = $1) "
    "ON CONFLICT (wamid) DO UPDATE SET status = CASE WHEN excluded.status = 'failed' OR "
    + _rank_sql("excluded.status") + " > " + _rank_sql("orphan_statuses.status")
    + " THEN excluded.status ELSE orphan_statuses.status END"
)
# A receipt that raced ahead of our own record of the send is applied when the send is recorded.
_UNPARK_SQL = (
    f"UPDATE outbox SET status = o.status, error_code = COALESCE(o.error_code, outbox.error_code), "
    f"error_reason = COALESCE(o.error_reason, outbox.error_reason) FROM orphan_statuses o "
    f"WHERE o.wamid = outbox.wamid AND outbox.wamid = $1 AND ((o.status <> 'failed' AND {_ORPHAN_RANK} > {_RANK}) "
    f"OR (o.status = 'failed' AND {_RANK} < 3))"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A message the business sends (AI reply, operator message, or a fixed server text)."""

    id: int
    phone_number_id: str
    customer_id: str
    author: str
    kind: str
    text: str
    reply_to_inbox_id: int | None
    status: str
    wamid: str | None
    attempts: int
    error_reason: str | None = None
    error_code: int | None = None
    body: str | None = None
    created_at: float = 0.0

    @classmethod
    def from_row(cls, row: Record) -> OutboxRow:
        """Build from a `SELECT *` row."""
        return row_to(cls, row)

    @property
    def key(self) -> ConversationKey:
        """The conversation of this row."""
        return ConversationKey(self.phone_number_id, self.customer_id)

    @property
    def message(self) -> OutboundMessage:
        """What to send."""
        body = orjson.loads(self.body) if self.body else None
        kind = self.kind if self.kind in ("text", "choices", "interactive", "template", "reaction") else "text"
        return OutboundMessage(kind, self.text, body)  # type: ignore[arg-type]


def enqueue_stmts(key: ConversationKey, messages: Sequence[OutboundMessage], *, author: str,
                  reply_to_inbox_id: int | None, now: float | None = None) -> list[Stmt]:
    """Queue the parts of one reply; each statement returns the new row's id (none if already queued)."""
    now = now or time.time()
    return [
        Stmt(
            "INSERT INTO outbox (phone_number_id, customer_id, author, kind, text, body, reply_to_inbox_id, part, "
            "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) "
            "ON CONFLICT (reply_to_inbox_id, author, part) DO NOTHING RETURNING id",
            (key.business, key.customer, author, msg.kind, msg.text,
             orjson.dumps(msg.body).decode() if msg.body is not None else None, reply_to_inbox_id, index, now),
            rows=True,
        )
        for index, msg in enumerate(messages)
    ]


def ids_of(results: Sequence[Any]) -> list[int]:
    """The row ids returned by `enqueue_stmts` results."""
    return [int(rows[0][0]) for rows in results if rows]


def sending_stmt(row_id: int) -> Stmt:
    """Written before the request: a crash after this point must not send again (queued → sending)."""
    return Stmt(
        "UPDATE outbox SET status = 'sending', attempts = attempts + 1, updated_at = $2 "
        "WHERE id = $1 AND status = 'queued'", (row_id, time.time()), expect=1,
    )


def sent_stmts(row_id: int, wamid: str) -> list[Stmt]:
    """The channel accepted it (sending → sent), and a receipt that raced ahead of us is applied."""
    return [
        Stmt("UPDATE outbox SET status = 'sent', wamid = $2, updated_at = $3 WHERE id = $1 AND status = 'sending'",
             (row_id, wamid, time.time()), expect=1),
        Stmt(_UNPARK_SQL, (wamid,)),
        Stmt("DELETE FROM orphan_statuses WHERE wamid = $1", (wamid,)),
    ]


def requeue_stmt(row_id: int, reason: str) -> Stmt:
    """A transient failure with a definite answer: it was not sent, so it may be tried again."""
    return Stmt("UPDATE outbox SET status = 'queued', error_reason = $2, updated_at = $3 "
                "WHERE id = $1 AND status = 'sending'", (row_id, reason, time.time()), expect=1)


def failed_stmt(row_id: int, code: int | None, reason: str, *, was: str = "sending") -> Stmt:
    """A final failure, with the channel's code and reason kept for diagnostics."""
    return Stmt("UPDATE outbox SET status = 'failed', error_code = $2, error_reason = $3, updated_at = $4 "
                "WHERE id = $1 AND status = $5", (row_id, code, reason, time.time(), was), expect=1)


def unknown_stmt(key: ConversationKey | None = None) -> Stmt:
    """Rows caught mid-send may or may not have gone out: never send them again (all, or one conversation's)."""
    sql = ("UPDATE outbox SET status = 'unknown', error_reason = 'interrupted while sending; not resent to avoid "
           "a duplicate', updated_at = $1 WHERE status = 'sending'")
    if key is None:
        return Stmt(sql, (time.time(),))
    return Stmt(sql + " AND phone_number_id = $2 AND customer_id = $3", (time.time(), key.business, key.customer))


def receipt_stmts(wamid: str, status: str, code: int | None, reason: str | None, *, now: float) -> list[Stmt]:
    """Apply a delivery receipt without ever downgrading; a receipt for an unknown wamid is parked."""
    if status not in RANK:
        return []
    ceiling = RANK["delivered"] if status == "failed" else 99
    return [
        Stmt(_RECEIPT_SQL, (wamid, status, code, reason, now, RANK[status], ceiling)),
        Stmt(_PARK_SQL, (wamid, status, code, reason, now)),
    ]


def echo_stmt(key: ConversationKey, *, wamid: str, kind: str, text: str) -> Stmt:
    """A message a person sent from the WhatsApp Business app; returns a row only when it is new."""
    now = time.time()
    return Stmt(
        "INSERT INTO outbox (phone_number_id, customer_id, author, kind, text, status, wamid, created_at, updated_at) "
        "VALUES ($1, $2, 'operator', $3, $4, 'sent', $5, $6, $6) ON CONFLICT (wamid) DO NOTHING RETURNING id",
        (key.business, key.customer, kind, text, wamid, now), rows=True,
    )


class OutboxRepo:
    """Reads of the outbox (its writes are the statements above, run by the conversation's actor)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(self, key: ConversationKey, messages: Sequence[OutboundMessage], *, author: str,
                      reply_to_inbox_id: int | None = None) -> list[int]:
        """Queue a message on its own (the operator API: only the actor moves it on from here)."""
        results = await self.db.write(enqueue_stmts(key, messages, author=author,
                                                    reply_to_inbox_id=reply_to_inbox_id))
        return ids_of(results)

    async def get(self, row_id: int) -> OutboxRow | None:
        """One row by id."""
        row = await self.db.fetchrow("SELECT * FROM outbox WHERE id = $1", row_id)
        return None if row is None else OutboxRow.from_row(row)

    async def queued(self, key: ConversationKey) -> list[OutboxRow]:
        """Rows of one conversation not yet attempted, oldest first."""
        rows = await self.db.fetch(
            "SELECT * FROM outbox WHERE phone_number_id = $1 AND customer_id = $2 AND status = 'queued' ORDER BY id",
            key.business, key.customer,
        )
        return [OutboxRow.from_row(r) for r in rows]

    async def last_from_ai(self, key: ConversationKey) -> OutboxRow | None:
        """The AI's latest message to this customer (a typed answer may refer to the choices it offered)."""
        row = await self.db.fetchrow(
            "SELECT * FROM outbox WHERE phone_number_id = $1 AND customer_id = $2 AND author = 'ai' "
            "ORDER BY id DESC LIMIT 1", key.business, key.customer)
        return None if row is None else OutboxRow.from_row(row)

    async def queued_conversations(self) -> list[ConversationKey]:
        """Conversations with rows waiting to be sent (replayed at start-up)."""
        rows = await self.db.fetch(
            "SELECT phone_number_id, customer_id, MIN(id) AS first FROM outbox WHERE status = 'queued' "
            "GROUP BY phone_number_id, customer_id ORDER BY first"
        )
        return [ConversationKey(r[0], r[1]) for r in rows]

    async def interrupted_to_unknown(self) -> int:
        """At start-up (one process): rows caught mid-send are never sent again."""
        return int((await self.db.write([unknown_stmt()]))[0])

    async def apply_status(self, wamid: str, status: str, code: int | None, reason: str | None) -> None:
        """Apply one delivery receipt on its own."""
        await self.db.write(receipt_stmts(wamid, status, code, reason, now=time.time()))

    async def for_conversation(self, key: ConversationKey, since: float = 0) -> list[Record]:
        """Rows of one conversation since a time, oldest first."""
        return await self.db.fetch(
            "SELECT * FROM outbox WHERE phone_number_id = $1 AND customer_id = $2 AND created_at >= $3 ORDER BY id",
            key.business, key.customer, since,
        )
