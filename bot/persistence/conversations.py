"""Conversations: the phone → session id mapping, the response chain, and the takeover state.

The conversation's actor is the only writer of its row while it is live: it loads the row once
(`load`), keeps it, and writes it back whole with the rest of a turn (`save_stmt`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.domain.conversation import LOCAL_CHANNEL, ConversationKey, InboundMessage
from bot.persistence.database import Database, Record, Stmt, row_to, values_stmts

# The business "number" of browser test chats: such conversations never reach the Graph API.
TEST_NUMBER_ID = LOCAL_CHANNEL


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
    last_outbound_at: float | None = None
    last_message_preview: str | None = None
    last_activity_at: float | None = None
    flag: str | None = None  # rate_limited | loop | budget | identity_changed: for operators to look at
    assigned_to: str | None = None
    rate_window_start: float | None = None
    rate_window_turns: int = 0
    flag_at: float | None = None

    @classmethod
    def from_row(cls, row: Record) -> Conversation:
        """Build from a `SELECT *` row."""
        return row_to(cls, row)

    @property
    def key(self) -> ConversationKey:
        """The conversation's key."""
        return ConversationKey(self.phone_number_id, self.customer_id)

    def is_paused(self, now: float) -> bool:
        """True while a human holds the conversation (a cooldown that has run out no longer holds)."""
        if not self.paused:
            return False
        return self.paused_until is None or now < self.paused_until

    def paused_by_human(self, *, until: float | None, now: float, needs_human: bool = False) -> Conversation:
        """The state after a person stepped in (until a time, or until handed back when None)."""
        return replace(self, paused=True, paused_until=until, paused_since=self.paused_since or now,
                       needs_human=self.needs_human or needs_human)

    def handed_back(self) -> Conversation:
        """The state after an operator gave the conversation back to the AI."""
        # A rate limit is lifted too: the operator decided the AI may answer this customer again.
        return replace(self, paused=False, paused_until=None, needs_human=False, flag=None, flag_at=None,
                       rate_window_start=None, rate_window_turns=0)

    def flagged(self, flag: str, now: float) -> Conversation:
        """Marked for operators (rate-limited, another bot on the line, budget reached…)."""
        return replace(self, flag=flag, flag_at=now)

    def touched(self, *, inbound: bool, preview: str | None, now: float) -> Conversation:
        """Activity for the inbox list and the diagnostics."""
        changes: dict[str, Any] = {"last_activity_at": now}
        changes["last_inbound_at" if inbound else "last_outbound_at"] = now
        if preview:
            changes["last_message_preview"] = preview[:200]
        return replace(self, **changes)


def new_session_id() -> str:
    """A random session id, never derived from the phone number."""
    return "s_" + secrets.token_urlsafe(18)


# The columns the actor owns and writes back whole after a turn. Phone, profile name and last inbound
# time come from the customer's messages and are written by both the ingest and the actor (see
# `arrival_stmts`); they, activity and preview only ever move forward.
_STATE_COLUMNS = (
    "last_response_id", "last_response_at", "language", "paused", "paused_until", "paused_since",
    "needs_human", "state", "last_outbound_at", "flag", "flag_at", "rate_window_start", "rate_window_turns",
)
_N = len(_STATE_COLUMNS)
_SAVE_SQL = (
    "UPDATE conversations SET "
    + ", ".join(f"{c} = ${i}" for i, c in enumerate(_STATE_COLUMNS, start=2))
    + f", last_message_preview = CASE WHEN ${_N + 2} >= COALESCE(last_activity_at, 0) "
    f"THEN COALESCE(${_N + 3}, last_message_preview) ELSE last_message_preview END"
    + f", last_activity_at = CASE WHEN ${_N + 2} > COALESCE(last_activity_at, 0) THEN ${_N + 2} "
    f"ELSE last_activity_at END"
    + f", updated_at = ${_N + 4}"
    # What the customer's messages told (the ingest writes these too, but only for conversations its
    # own process runs): the number and name when known, the last inbound time forward only.
    + f", wa_id = COALESCE(${_N + 5}, wa_id), user_id = COALESCE(${_N + 6}, user_id)"
    + f", profile_name = COALESCE(${_N + 7}, profile_name)"
    + f", last_inbound_at = CASE WHEN ${_N + 8} > COALESCE(last_inbound_at, 0) THEN ${_N + 8} "
    "ELSE last_inbound_at END WHERE id = $1"
)


_ARRIVAL_SQL = (
    "INSERT INTO conversations (phone_number_id, customer_id, wa_id, user_id, profile_name, session_id, is_test, "
    "created_at, updated_at, last_activity_at, last_inbound_at, last_message_preview) VALUES {rows} "
    "ON CONFLICT (phone_number_id, customer_id) DO UPDATE SET "
    "wa_id = COALESCE(excluded.wa_id, conversations.wa_id), "
    "user_id = COALESCE(excluded.user_id, conversations.user_id), "
    "profile_name = COALESCE(excluded.profile_name, conversations.profile_name), "
    "last_inbound_at = CASE WHEN excluded.last_inbound_at > COALESCE(conversations.last_inbound_at, 0) "
    "THEN excluded.last_inbound_at ELSE conversations.last_inbound_at END, "
    "last_message_preview = CASE WHEN excluded.last_activity_at >= COALESCE(conversations.last_activity_at, 0) "
    "THEN excluded.last_message_preview ELSE conversations.last_message_preview END, "
    "last_activity_at = CASE WHEN excluded.last_activity_at > COALESCE(conversations.last_activity_at, 0) "
    "THEN excluded.last_activity_at ELSE conversations.last_activity_at END"
)
# A conversation another process runs: created if new, otherwise not touched (no row lock taken).
_NEW_ONLY_SQL = _ARRIVAL_SQL.split(" DO UPDATE ")[0] + " DO NOTHING"
# A customer first known by phone now arrives with a business-scoped id (conversations from before Meta
# sent BSUIDs, sessions imported from the Frappe module): the history moves to the new key with them.
_ADOPT_GUARD = (
    "phone_number_id = $1 AND customer_id = $2 AND NOT EXISTS (SELECT 1 FROM conversations c "
    "WHERE c.phone_number_id = $1 AND c.customer_id = $3)"
)


@dataclass(frozen=True, slots=True)
class Arrival:
    """Someone was heard from on a conversation: a customer's message (`inbound`) or a Business-app echo."""

    business: str
    customer: str
    wa_id: str | None
    user_id: str | None
    profile_name: str | None
    at: float
    preview: str
    inbound: bool = True

    @classmethod
    def of(cls, msg: InboundMessage, now: float) -> Arrival:
        """A customer's message; its time is the customer's own (Meta's timestamp, never ahead of now)."""
        at = min(float(msg.timestamp), now) if msg.timestamp else now
        return cls(msg.phone_number_id, msg.customer_id, msg.wa_id, msg.user_id, msg.profile_name, at,
                   (msg.text or PREVIEWS.get(msg.type, f"[{msg.type}]"))[:200])


PREVIEWS = {"revoke": "[message deleted]"}  # what the list shows for a message without text


def arrival_stmts(arrivals: Sequence[Arrival], *, now: float,
                  owned: Callable[[tuple[str, str]], bool] = lambda _key: True) -> list[Stmt]:
    """At ingest: create each conversation (with a random session id) or bring it up to date.

    Idempotent for re-deliveries, since the times are the customer's own: a duplicate moves nothing.
    Only the conversations this process runs (`owned`) are brought up to date here: another
    process's turns lock their rows, and waiting for those locks would make the two processes'
    groups wait for each other. Their rows are created if new and otherwise left to the actor that
    answers the message, whose turn writes the same columns (`save_stmt`, forward only).
    """
    stmts: list[Stmt] = []
    latest: dict[tuple[str, str], Arrival] = {}
    heard: dict[tuple[str, str], float] = {}
    for arrival in arrivals:
        if arrival.wa_id and arrival.customer != arrival.wa_id:
            args = (arrival.business, arrival.wa_id, arrival.customer)
            for table in ("inbox", "outbox", "commands", "contacts"):
                stmts.append(Stmt(f"UPDATE {table} SET customer_id = $3 WHERE {_ADOPT_GUARD}", args))
            stmts.append(Stmt(f"UPDATE conversations SET customer_id = $3, user_id = $3 WHERE {_ADOPT_GUARD}", args))
        # One row per conversation and statement: the latest arrival (by the customer's own times, so
        # that a webhook delivered late in a batch moves nothing back), and the latest inbound time.
        key = (arrival.business, arrival.customer)
        seen = latest.get(key)
        if seen is None or arrival.at >= seen.at:
            latest[key] = arrival
        if arrival.inbound:
            heard[key] = max(heard.get(key, arrival.at), arrival.at)
    # In key order: two processes creating the same new conversations lock them in the same order.
    ordered = sorted(latest.items())
    for sql, is_owned in ((_ARRIVAL_SQL, True), (_NEW_ONLY_SQL, False)):
        stmts += values_stmts(sql, [
            (a.business, a.customer, a.wa_id, a.user_id, a.profile_name, new_session_id(),
             int(a.business == TEST_NUMBER_ID), now, now, a.at, heard.get(key), a.preview)
            for key, a in ordered if owned(key) == is_owned])
    return stmts


def _db_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


class ConversationRepo:
    """Reads and writes the conversations table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, phone_number_id: str, customer_id: str) -> Conversation | None:
        """The stored conversation, or None."""
        row = await self.db.fetchrow(
            "SELECT * FROM conversations WHERE phone_number_id = $1 AND customer_id = $2",
            phone_number_id, customer_id,
        )
        return None if row is None else Conversation.from_row(row)

    async def find(self, ident: str) -> Conversation | None:
        """Look a conversation up by customer id, phone (wa_id) or session id (newest first)."""
        row = await self.db.fetchrow(
            "SELECT * FROM conversations WHERE customer_id = $1 OR wa_id = $1 OR session_id = $1 "
            "ORDER BY last_activity_at DESC NULLS LAST LIMIT 1",
            ident,
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
        async with self.db.transaction() as tx:
            if wa_id and customer_id != wa_id:
                await self._adopt_phone_keyed(tx, phone_number_id, customer_id, wa_id)
            row = await tx.fetchrow(
                "INSERT INTO conversations (phone_number_id, customer_id, wa_id, user_id, profile_name, "
                "session_id, is_test, created_at, updated_at, last_activity_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8) "
                "ON CONFLICT (phone_number_id, customer_id) DO UPDATE SET "
                "wa_id = COALESCE(excluded.wa_id, conversations.wa_id), "
                "user_id = COALESCE(excluded.user_id, conversations.user_id), "
                "profile_name = COALESCE(excluded.profile_name, conversations.profile_name) RETURNING *",
                phone_number_id, customer_id, wa_id, user_id, profile_name, new_session_id(),
                int(is_test or phone_number_id == TEST_NUMBER_ID), now,
            )
        assert row is not None
        return Conversation.from_row(row)

    @staticmethod
    async def _adopt_phone_keyed(tx: Any, phone_number_id: str, customer_id: str, wa_id: str) -> None:
        """A customer first known by phone now arrives with a business-scoped id: keep one conversation.

        Happens for conversations from before Meta sent BSUIDs, and for sessions imported from the
        Frappe module (keyed by phone). Their history moves to the new key with them.
        """
        exists = await tx.fetchval(
            "SELECT 1 FROM conversations WHERE phone_number_id = $1 AND customer_id = $2", phone_number_id, customer_id
        )
        if exists is not None:
            return
        await ConversationRepo.move_in(tx, phone_number_id, old=wa_id, new=customer_id, user_id=customer_id)

    @staticmethod
    async def move_in(tx: Any, phone_number_id: str, *, old: str, new: str, user_id: str | None = None,
                      wa_id: str | None = None) -> bool:
        """Re-key a conversation and its history (inbox, outbox, contact) from one customer id to another."""
        moved = await tx.execute(
            "UPDATE conversations SET customer_id = $1, user_id = COALESCE($2, user_id), "
            "wa_id = COALESCE($3, wa_id) WHERE phone_number_id = $4 AND customer_id = $5",
            new, user_id, wa_id, phone_number_id, old,
        )
        if moved:
            for table in ("inbox", "outbox", "contacts", "commands"):
                await tx.execute(
                    f"UPDATE {table} SET customer_id = $1 WHERE phone_number_id = $2 AND customer_id = $3",
                    new, phone_number_id, old,
                )
        return bool(moved)

    @staticmethod
    def save_stmt(conv: Conversation, now: float | None = None) -> Stmt:
        """The statement that writes a conversation's state back (part of a turn's unit)."""
        values = [_db_value(getattr(conv, c)) for c in _STATE_COLUMNS]
        return Stmt(_SAVE_SQL, (conv.id, *values, conv.last_activity_at or 0.0, conv.last_message_preview,
                                now or time.time(), conv.wa_id, conv.user_id, conv.profile_name,
                                conv.last_inbound_at or 0.0))

    @staticmethod
    def activity_stmt(conv: Conversation, now: float) -> Stmt:
        """After a send: the outbound time, and the activity and preview (which only move forward)."""
        return Stmt(
            "UPDATE conversations SET last_outbound_at = $2, last_message_preview = CASE WHEN $2 >= "
            "COALESCE(last_activity_at, 0) THEN COALESCE($3, last_message_preview) ELSE last_message_preview END, "
            "last_activity_at = CASE WHEN $2 > COALESCE(last_activity_at, 0) THEN $2 ELSE last_activity_at END, "
            "updated_at = $2 WHERE id = $1",
            (conv.id, now, conv.last_message_preview),
        )

    async def save(self, conv: Conversation) -> None:
        """Write a conversation's state back on its own (outside a turn)."""
        await self.db.write([self.save_stmt(conv)])

    async def set_assigned(self, conversation_id: int, username: str | None) -> None:
        """Who holds the conversation in the inbox (not part of the actor's state)."""
        await self.db.execute(
            "UPDATE conversations SET assigned_to = $1, updated_at = $2 WHERE id = $3",
            username, time.time(), conversation_id,
        )

    async def reset_sessions(self) -> int:
        """Forget every response chain and session mapping (contacts and orders stay)."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT id FROM conversations")
            await tx.executemany(
                "UPDATE conversations SET session_id = $1, last_response_id = NULL, last_response_at = NULL, "
                "paused_since = NULL WHERE id = $2",
                [(new_session_id(), row[0]) for row in rows],
            )
            return len(rows)
