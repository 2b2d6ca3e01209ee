"""The outbox: a row is written before a send and marked after it, so a crash never sends twice."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from bot.persistence.db import Database, Row, row_to

# Status order for delivery receipts. Meta does not promise order, so a late 'delivered' must
# never undo a 'read'. 'failed' may only replace states before delivery.
RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4, "failed": 5, "unknown": 1}
_RANK_SQL = (
    "(CASE status WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'unknown' THEN 1 WHEN 'sent' THEN 2 "
    "WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 WHEN 'failed' THEN 5 ELSE 0 END)"
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

    @classmethod
    def from_row(cls, row: Row) -> OutboxRow:
        """Build from a `SELECT *` row."""
        return row_to(cls, row)


class OutboxRepo:
    """Outbox rows move queued → sending → sent → delivered → read, or to failed/unknown."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(
        self,
        phone_number_id: str,
        customer_id: str,
        *,
        author: str,
        parts: Sequence[str],
        reply_to_inbox_id: int | None,
        kind: str = "text",
    ) -> list[int]:
        """Queue the parts of one reply (joins the caller's transaction when there is one)."""
        now = time.time()
        ids: list[int] = []
        async with self.db.transaction() as conn:
            for index, text in enumerate(parts):
                cur = await conn.execute(
                    "INSERT OR IGNORE INTO outbox (phone_number_id, customer_id, author, kind, text, "
                    "reply_to_inbox_id, part, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (phone_number_id, customer_id, author, kind, text, reply_to_inbox_id, index, now, now),
                )
                if cur.rowcount and cur.lastrowid is not None:
                    ids.append(cur.lastrowid)
                await cur.close()
        return ids

    async def get(self, row_id: int) -> OutboxRow | None:
        """One row by id."""
        row = await self.db.fetchone("SELECT * FROM outbox WHERE id = ?", (row_id,))
        return None if row is None else OutboxRow.from_row(row)

    async def record_echo(self, phone_number_id: str, customer_id: str, *, wamid: str, kind: str,
                          text: str) -> bool:
        """Store a message a person sent from the WhatsApp Business app; False if already stored."""
        now = time.time()
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO outbox (phone_number_id, customer_id, author, kind, text, status, wamid, "
                "created_at, updated_at) VALUES (?, ?, 'operator', ?, ?, 'sent', ?, ?, ?)",
                (phone_number_id, customer_id, kind, text, wamid, now, now),
            )
            new = bool(cur.rowcount)
            await cur.close()
        return new

    async def queued(self, phone_number_id: str, customer_id: str) -> list[OutboxRow]:
        """Rows of one conversation not yet attempted, oldest first."""
        rows = await self.db.fetchall(
            "SELECT * FROM outbox WHERE phone_number_id = ? AND customer_id = ? AND status = 'queued' ORDER BY id",
            (phone_number_id, customer_id),
        )
        return [OutboxRow.from_row(r) for r in rows]

    async def queued_conversations(self) -> list[tuple[str, str]]:
        """Conversations with rows waiting to be sent (replayed at start-up)."""
        rows = await self.db.fetchall(
            "SELECT phone_number_id, customer_id, MIN(id) AS first FROM outbox WHERE status = 'queued' "
            "GROUP BY phone_number_id, customer_id ORDER BY first"
        )
        return [(r[0], r[1]) for r in rows]

    async def mark_sending(self, row_id: int) -> None:
        """Written before the HTTP request: a crash after this point must not send again."""
        await self.db.execute(
            "UPDATE outbox SET status = 'sending', attempts = attempts + 1, updated_at = ? WHERE id = ?",
            (time.time(), row_id),
        )

    async def mark_sent(self, row_id: int, wamid: str) -> None:
        """Graph accepted the message; apply a receipt that raced ahead of us, if any."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox SET status = 'sent', wamid = ?, updated_at = ? WHERE id = ?",
                (wamid, time.time(), row_id),
            )
            cur = await conn.execute(
                "SELECT status, error_code, error_reason FROM orphan_statuses WHERE wamid = ?", (wamid,)
            )
            early = await cur.fetchone()
            await cur.close()
            if early is not None:
                await conn.execute("DELETE FROM orphan_statuses WHERE wamid = ?", (wamid,))
                await self._apply(conn, wamid, early[0], early[1], early[2])

    async def requeue(self, row_id: int, reason: str) -> None:
        """A transient failure with a definite answer: it was not sent, so it may be tried again."""
        await self.db.execute(
            "UPDATE outbox SET status = 'queued', error_reason = ?, updated_at = ? WHERE id = ?",
            (reason, time.time(), row_id),
        )

    async def mark_failed(self, row_id: int, code: int | None, reason: str) -> None:
        """A final failure, with Graph's code and reason kept for diagnostics."""
        await self.db.execute(
            "UPDATE outbox SET status = 'failed', error_code = ?, error_reason = ?, updated_at = ? WHERE id = ?",
            (code, reason, time.time(), row_id),
        )

    async def interrupted_to_unknown(self) -> int:
        """At start-up: rows caught mid-send may or may not have gone out; never send them again."""
        return await self.db.execute(
            "UPDATE outbox SET status = 'unknown', error_reason = 'interrupted while sending; not resent to "
            "avoid a duplicate', updated_at = ? WHERE status = 'sending'",
            (time.time(),),
        )

    async def apply_status(self, wamid: str, status: str, code: int | None, reason: str | None) -> bool:
        """Apply a delivery receipt without ever downgrading; unknown wamids are parked for later."""
        if status not in RANK:
            return False
        async with self.db.transaction() as conn:
            changed = await self._apply(conn, wamid, status, code, reason)
            cur = await conn.execute("SELECT 1 FROM outbox WHERE wamid = ?", (wamid,))
            known = await cur.fetchone()
            await cur.close()
            if known is None:
                await conn.execute(
                    "INSERT INTO orphan_statuses (wamid, status, error_code, error_reason, received_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (wamid) DO UPDATE SET "
                    "status = CASE WHEN excluded.status = 'failed' OR "
                    "(CASE excluded.status WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 ELSE 0 END)"
                    " > (CASE status WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 ELSE 0 END) "
                    "THEN excluded.status ELSE status END",
                    (wamid, status, code, reason, time.time()),
                )
            return changed

    @staticmethod
    async def _apply(
        conn: aiosqlite.Connection, wamid: str, status: str, code: int | None, reason: str | None) -> bool:
        rank = RANK[status]
        # 'failed' after delivery would be a contradiction from Meta: keep the better news.
        ceiling = RANK["delivered"] if status == "failed" else 99
        cur = await conn.execute(
            f"UPDATE outbox SET status = ?, error_code = COALESCE(?, error_code), "
            f"error_reason = COALESCE(?, error_reason), updated_at = ? "
            f"WHERE wamid = ? AND {_RANK_SQL} < ? AND {_RANK_SQL} < ?",
            (status, code, reason, time.time(), wamid, rank, ceiling),
        )
        changed = bool(cur.rowcount)
        await cur.close()
        return changed

    async def for_conversation(self, phone_number_id: str, customer_id: str, since: float = 0) -> list[Row]:
        """Rows of one conversation since a time, oldest first."""
        return await self.db.fetchall(
            "SELECT * FROM outbox WHERE phone_number_id = ? AND customer_id = ? AND created_at >= ? ORDER BY id",
            (phone_number_id, customer_id, since),
        )
