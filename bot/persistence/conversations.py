"""Conversations: the phone → session id mapping, the response chain, and the takeover state."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import aiosqlite

from bot.persistence.db import Database, Row, row_to


@dataclass(frozen=True, slots=True)
class Conversation:
    """One customer on one business number, as stored."""

    id: int
    phone_number_id: str
    customer_id: str
    wa_id: str | None
    user_id: str | None
    profile_name: str | None
    session_id: str
    last_response_id: str | None
    last_response_at: float | None
    language: str | None
    paused: bool
    paused_until: float | None
    paused_since: float | None
    needs_human: bool
    is_test: bool
    state: str
    last_inbound_at: float | None

    @classmethod
    def from_row(cls, row: Row) -> Conversation:
        """Build from a `SELECT *` row."""
        return row_to(cls, row)

    def is_paused(self, now: float) -> bool:
        """True while a human holds the conversation (a cooldown that has run out no longer holds)."""
        if not self.paused:
            return False
        return self.paused_until is None or now < self.paused_until


# The business "number" of browser test chats: such conversations never reach the Graph API.
TEST_NUMBER_ID = "test"


def new_session_id() -> str:
    """A random session id, never derived from the phone number."""
    return "s_" + secrets.token_urlsafe(18)


class ConversationRepo:
    """Reads and writes the conversations table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, phone_number_id: str, customer_id: str) -> Conversation | None:
        """The stored conversation, or None."""
        row = await self.db.fetchone(
            "SELECT * FROM conversations WHERE phone_number_id = ? AND customer_id = ?",
            (phone_number_id, customer_id),
        )
        return None if row is None else Conversation.from_row(row)

    async def find(self, ident: str) -> Conversation | None:
        """Look a conversation up by customer id, phone (wa_id) or session id (newest first)."""
        row = await self.db.fetchone(
            "SELECT * FROM conversations WHERE customer_id = ? OR wa_id = ? OR session_id = ? "
            "ORDER BY last_activity_at DESC LIMIT 1",
            (ident, ident, ident),
        )
        return None if row is None else Conversation.from_row(row)

    async def ensure(
        self,
        phone_number_id: str,
        customer_id: str,
        *,
        wa_id: str | None = None,
        user_id: str | None = None,
        profile_name: str | None = None,
        is_test: bool = False,
    ) -> Conversation:
        """Get or create, keeping the phone and profile name up to date when Meta sends them."""
        now = time.time()
        async with self.db.transaction() as conn:
            if wa_id and customer_id != wa_id:
                await self._adopt_phone_keyed(conn, phone_number_id, customer_id, wa_id)
            await conn.execute(
                "INSERT INTO conversations (phone_number_id, customer_id, wa_id, user_id, profile_name, "
                "session_id, is_test, created_at, updated_at, last_activity_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (phone_number_id, customer_id) DO UPDATE SET "
                "wa_id = COALESCE(excluded.wa_id, wa_id), user_id = COALESCE(excluded.user_id, user_id), "
                "profile_name = COALESCE(excluded.profile_name, profile_name)",
                (
                    phone_number_id, customer_id, wa_id, user_id, profile_name,
                    new_session_id(), int(is_test or phone_number_id == TEST_NUMBER_ID), now, now, now,
                ),
            )
        conv = await self.get(phone_number_id, customer_id)
        assert conv is not None
        return conv

    @staticmethod
    async def _adopt_phone_keyed(conn: aiosqlite.Connection, phone_number_id: str, customer_id: str,
                                 wa_id: str) -> None:
        """A customer first known by phone now arrives with a business-scoped id: keep one conversation.

        Happens for conversations from before Meta sent BSUIDs, and for sessions imported from the
        Frappe module (keyed by phone). Their history moves to the new key with them.
        """
        cur = await conn.execute(
            "SELECT 1 FROM conversations WHERE phone_number_id = ? AND customer_id = ?", (phone_number_id, customer_id)
        )
        exists = await cur.fetchone()
        await cur.close()
        if exists is not None:
            return
        cur = await conn.execute(
            "UPDATE conversations SET customer_id = ?, user_id = ? WHERE phone_number_id = ? AND customer_id = ?",
            (customer_id, customer_id, phone_number_id, wa_id),
        )
        moved = cur.rowcount
        await cur.close()
        if moved:
            for table in ("inbox", "outbox", "contacts"):
                await conn.execute(
                    f"UPDATE {table} SET customer_id = ? WHERE phone_number_id = ? AND customer_id = ?",
                    (customer_id, phone_number_id, wa_id),
                )

    async def save_response(self, conversation_id: int, response_id: str | None) -> None:
        """Remember the chain head (None starts a new chain next time)."""
        await self.db.execute(
            "UPDATE conversations SET last_response_id = ?, last_response_at = ?, updated_at = ? WHERE id = ?",
            (response_id, time.time() if response_id else None, time.time(), conversation_id),
        )

    async def set_language(self, conversation_id: int, language: str) -> None:
        """Store the detected language."""
        await self.db.execute(
            "UPDATE conversations SET language = ?, updated_at = ? WHERE id = ?",
            (language, time.time(), conversation_id),
        )

    async def set_state(self, conversation_id: int, state: str) -> None:
        """'active' or 'failed' (the last turn could not be answered)."""
        await self.db.execute(
            "UPDATE conversations SET state = ?, updated_at = ? WHERE id = ?", (state, time.time(), conversation_id)
        )

    async def pause(self, conversation_id: int, *, until: float | None, needs_human: bool = False) -> None:
        """A human holds the conversation (until a time, or until handed back when None)."""
        now = time.time()
        await self.db.execute(
            "UPDATE conversations SET paused = 1, paused_until = ?, paused_since = COALESCE(paused_since, ?), "
            "needs_human = MAX(needs_human, ?), updated_at = ? WHERE id = ?",
            (until, now, int(needs_human), now, conversation_id),
        )

    async def resume(self, conversation_id: int) -> None:
        """Hand the conversation back to the AI."""
        await self.db.execute(
            "UPDATE conversations SET paused = 0, paused_until = NULL, needs_human = 0, updated_at = ? "
            "WHERE id = ?",
            (time.time(), conversation_id),
        )

    async def clear_pause_marker(self, conversation_id: int) -> None:
        """Forget when the last pause began (its messages have been given to the model)."""
        await self.db.execute("UPDATE conversations SET paused_since = NULL WHERE id = ?", (conversation_id,))

    async def touch(self, conversation_id: int, *, inbound: bool, preview: str | None) -> None:
        """Record activity for the inbox list and the diagnostics."""
        now = time.time()
        column = "last_inbound_at" if inbound else "last_outbound_at"
        await self.db.execute(
            f"UPDATE conversations SET {column} = ?, last_activity_at = ?, "
            "last_message_preview = COALESCE(?, last_message_preview), updated_at = ? WHERE id = ?",
            (now, now, preview[:200] if preview else None, now, conversation_id),
        )

    async def reset_sessions(self) -> int:
        """Forget every response chain and session mapping (contacts and orders stay)."""
        async with self.db.transaction() as conn:
            rows = await conn.execute_fetchall("SELECT id FROM conversations")
            for row in rows:
                await conn.execute(
                    "UPDATE conversations SET session_id = ?, last_response_id = NULL, last_response_at = NULL, "
                    "paused_since = NULL WHERE id = ?",
                    (new_session_id(), row[0]),
                )
            return len(list(rows))
