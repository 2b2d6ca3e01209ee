"""Read-only counts across tables for the diagnostics page."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.persistence.conversations import TEST_NUMBER_ID as TEST
from bot.persistence.database import Database


@dataclass(frozen=True, slots=True)
class SessionCounts:
    """Stored conversations and how many a human holds."""

    stored: int
    paused: int
    needs_human: int


@dataclass(frozen=True, slots=True)
class Traffic:
    """WhatsApp messages over a window."""

    incoming: int
    outgoing: int
    failed_by_code: dict[str, int]
    last_inbound_at: float | None
    last_outbound_at: float | None


class StatsRepo:
    """Counts only: nothing here writes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def sessions(self) -> SessionCounts:
        """Stored sessions, paused now, and waiting for a person."""
        row = await self.db.fetchrow(
            "SELECT COUNT(*) AS stored, "
            "COALESCE(SUM(CASE WHEN paused = 1 AND (paused_until IS NULL OR paused_until > $1) THEN 1 ELSE 0 END), 0)"
            " AS paused, COALESCE(SUM(needs_human), 0) AS needs_human FROM conversations",
            time.time(),
        )
        assert row is not None
        return SessionCounts(stored=row["stored"], paused=row["paused"], needs_human=row["needs_human"])

    async def traffic(self, window_seconds: float = 24 * 3600) -> Traffic:
        """WhatsApp incoming and outgoing messages, and failed sends by Graph error code (test chats left out)."""
        since = time.time() - window_seconds
        incoming = await self.db.fetchval(
            "SELECT COUNT(*) FROM inbox WHERE received_at >= $1 AND phone_number_id <> $2", since, TEST
        )
        outgoing = await self.db.fetchval(
            "SELECT COUNT(*) FROM outbox WHERE created_at >= $1 AND phone_number_id <> $2", since, TEST
        )
        failed = await self.db.fetch(
            "SELECT COALESCE(CAST(error_code AS TEXT), 'none') AS code, COUNT(*) AS count FROM outbox "
            "WHERE status = 'failed' AND created_at >= $1 AND phone_number_id <> $2 "
            "GROUP BY COALESCE(CAST(error_code AS TEXT), 'none') ORDER BY count DESC",
            since, TEST,
        )
        last_in = await self.db.fetchval("SELECT MAX(received_at) FROM inbox WHERE phone_number_id <> $1", TEST)
        last_out = await self.db.fetchval("SELECT MAX(created_at) FROM outbox WHERE phone_number_id <> $1", TEST)
        return Traffic(
            incoming=int(incoming or 0),
            outgoing=int(outgoing or 0),
            failed_by_code={r["code"]: r["count"] for r in failed},
            last_inbound_at=last_in,
            last_outbound_at=last_out,
        )
