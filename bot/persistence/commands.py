"""The durable mailbox of conversation actors: commands written by whoever receives them (an operator's
pause, a Business-app echo …) and consumed in order by the conversation's actor, in the same unit
as their effect, so a command is applied exactly once even across a crash."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bot.domain.conversation import ConversationKey
from bot.persistence.database import Database, Stmt, marks


@dataclass(frozen=True, slots=True)
class Command:
    """One queued command for a conversation's actor."""

    id: int
    kind: str
    payload: dict[str, Any]
    created_at: float


def add_stmt(key: ConversationKey, kind: str, payload: dict[str, Any] | None = None) -> Stmt:
    """Queue a command (part of a unit); returns its id."""
    return Stmt(
        "INSERT INTO commands (phone_number_id, customer_id, kind, payload, created_at) VALUES ($1, $2, $3, $4, $5) "
        "RETURNING id",
        (key.business, key.customer, kind, orjson.dumps(payload or {}).decode(), time.time()), rows=True,
    )


def consume_stmt(ids: Sequence[int]) -> Stmt:
    """Take commands off the mailbox (in the unit that applies them)."""
    return Stmt(f"DELETE FROM commands WHERE id IN ({marks(len(ids))})", tuple(ids))


class CommandRepo:
    """Reads the mailbox; writes go through units."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, key: ConversationKey, kind: str, payload: dict[str, Any] | None = None) -> int:
        """Queue one command on its own; returns its id."""
        rows = (await self.db.write([add_stmt(key, kind, payload)]))[0]
        return int(rows[0][0])

    async def for_key(self, key: ConversationKey) -> list[Command]:
        """A conversation's commands, oldest first."""
        rows = await self.db.fetch(
            "SELECT id, kind, payload, created_at FROM commands WHERE phone_number_id = $1 AND customer_id = $2 "
            "ORDER BY id", key.business, key.customer,
        )
        return [Command(r["id"], r["kind"], orjson.loads(r["payload"]), r["created_at"]) for r in rows]

    async def waiting(self) -> list[ConversationKey]:
        """Conversations with commands not yet applied (replayed at start-up)."""
        rows = await self.db.fetch(
            "SELECT phone_number_id, customer_id, MIN(id) AS first FROM commands "
            "GROUP BY phone_number_id, customer_id ORDER BY first"
        )
        return [ConversationKey(r[0], r[1]) for r in rows]
