"""Conversation ownership: PostgreSQL session advisory locks held on one connection per process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from bot.domain.conversation import ConversationKey

log = structlog.get_logger("bot.cluster")

Connect = Callable[[], Awaitable[Any]]  # an asyncpg connection, with the database's URL and settings


def lock_id(key: ConversationKey) -> int:
    """A conversation's advisory lock (32 bits): a collision only makes two conversations share an owner."""
    digest = hashlib.blake2b(f"{key.business}\x00{key.customer}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class Ownership:
    """Claims and releases conversations, and named one-off jobs (the knowledge base's indexing)."""

    def __init__(self, connect: Connect, *, on_lost: Callable[[], None]) -> None:
        self._connect = connect
        self._on_lost = on_lost
        self._conn: Any = None
        self._class = 0
        self._jobs = 0
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self.closing = False

    async def open(self) -> None:
        """Connect; the lock class is per schema, so installations sharing a database never collide."""
        self._conn = await self._connect()
        # hashtext() is PostgreSQL's own: one installation per schema, one lock space each.
        self._class = int(await self._conn.fetchval("SELECT hashtext('bot-conversations:' || current_schema())"))
        self._jobs = int(await self._conn.fetchval("SELECT hashtext('bot-jobs:' || current_schema())"))
        self._conn.add_termination_listener(self._terminated)

    def _terminated(self, _conn: Any) -> None:
        if not self.closing:
            # Every lock this process held is gone: another process may run our conversations now.
            log.error("ownership_connection_lost")
            self._on_lost()

    async def claim(self, keys: Iterable[ConversationKey]) -> set[ConversationKey]:
        """Try to take these conversations' locks without waiting; returns those now held."""
        wanted = {lock_id(k): k for k in keys}
        if not wanted:
            return set()
        objids = list(wanted)
        async with self._lock:
            rows = await self._conn.fetch(
                "SELECT o FROM unnest($2::int[]) AS o WHERE pg_try_advisory_lock($1, o)", self._class, objids)
        got = {row[0] for row in rows}
        return {k for o, k in wanted.items() if o in got}

    async def release(self, keys: Iterable[ConversationKey]) -> None:
        """Give conversations up (after their actors have stopped)."""
        objids = [lock_id(k) for k in keys]
        if not objids or self._conn is None or self._conn.is_closed():
            return
        async with self._lock:
            await self._conn.execute("SELECT pg_advisory_unlock($1, o) FROM unnest($2::int[]) AS o",
                                     self._class, objids)

    async def job(self, name: str) -> bool:
        """Take the lock of a cluster-wide one-off job (held until `done`); False when another process has it."""
        async with self._lock:
            got = await self._conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", self._jobs, name)
        return bool(got)

    async def done(self, name: str) -> None:
        """Release a job's lock."""
        async with self._lock:
            await self._conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", self._jobs, name)

    async def close(self) -> None:
        """Disconnect: PostgreSQL releases every lock this session held."""
        self.closing = True
        if self._conn is not None:
            await self._conn.close()
