"""Conversation ownership: PostgreSQL session advisory locks held on one connection per process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any

import structlog

from bot.domain.conversation import ConversationKey

log = structlog.get_logger("bot.cluster")

Connect = Callable[[], Awaitable[Any]]  # an asyncpg connection, with the database's URL and settings

# The lock connection is checked this often: a connection that died silently (a network partition,
# not a closed socket) is noticed within about PING_SECONDS + its command timeout.
PING_SECONDS = 2.0
JOB_POLL_SECONDS = 1.0


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
        self._job_locks: dict[str, asyncio.Lock] = {}  # advisory locks are re-entrant within a session
        self._pinger: asyncio.Task[None] | None = None
        self.closing = False
        self.lost = False

    async def open(self) -> None:
        """Connect; the lock class is per schema, so installations sharing a database never collide."""
        self._conn = await self._connect()
        # hashtext() is PostgreSQL's own: one installation per schema, one lock space each.
        self._class = int(await self._conn.fetchval("SELECT hashtext('bot-conversations:' || current_schema())"))
        self._jobs = int(await self._conn.fetchval("SELECT hashtext('bot-jobs:' || current_schema())"))
        self._conn.add_termination_listener(self._terminated)
        self._pinger = asyncio.get_running_loop().create_task(self._ping(), name="cluster-ownership-ping")

    @property
    def backend_pid(self) -> int:
        """The PostgreSQL backend that holds our locks (pg_stat_activity.pid)."""
        return int(self._conn.get_server_pid())

    def _terminated(self, _conn: Any) -> None:
        self._lose("the lock connection closed")

    def _lose(self, reason: str) -> None:
        if self.closing or self.lost:
            return
        # Every lock this process held is gone: another process may run our conversations now.
        self.lost = True
        log.error("ownership_connection_lost", reason=reason)
        self._on_lost()

    async def _ping(self) -> None:
        while not self.closing:
            await asyncio.sleep(PING_SECONDS)
            try:
                async with self._lock:
                    await self._conn.fetchval("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lose(f"{type(exc).__name__}: {exc}")
                return

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

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Run a block as the cluster's only runner of job `name`: waits (polling) while another process has it."""
        local = self._job_locks.setdefault(name, asyncio.Lock())
        async with local:
            # The holder may be another process: there is nothing to wait on but the lock itself.
            while not await self.job(name):  # noqa: ASYNC110
                await asyncio.sleep(JOB_POLL_SECONDS)
            try:
                yield
            finally:
                with suppress(Exception):  # a lost connection has released it already
                    await self.done(name)

    async def close(self) -> None:
        """Disconnect: PostgreSQL releases every lock this session held."""
        self.closing = True
        if self._pinger is not None:
            self._pinger.cancel()
            with suppress(asyncio.CancelledError):
                await self._pinger
        if self._conn is not None:
            with suppress(Exception):
                await self._conn.close()
