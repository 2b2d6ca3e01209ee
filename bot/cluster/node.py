"""This process as one of several on a PostgreSQL database: its locks, its bus, the shared send rate."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import structlog

from bot.cluster.bus import Bus
from bot.cluster.ownership import Ownership
from bot.cluster.rate import SharedRate
from bot.persistence.postgres import PostgresDatabase

log = structlog.get_logger("bot.cluster")


class Node:
    """Opened at start-up when the store is PostgreSQL; `lost` once a connection that held our locks died.

    A process that lost its locks must stop: another one may be running its conversations already.
    The fences on the inbox and the outbox keep what it still has in flight from answering twice;
    the hooks (readiness, the registry, the process's own shutdown) take it out of the cluster.
    """

    def __init__(self, db: PostgresDatabase, *, send_rate: float) -> None:
        self.ownership = Ownership(lambda: db.connect("locks"), on_lost=self._lose)
        self.bus = Bus(lambda: db.connect("bus"), on_lost=self._lose)
        self.rate = SharedRate(db, send_rate)
        self.lost = False
        self._hooks: list[Callable[[], None]] = []

    async def open(self) -> None:
        """Connect the lock and bus connections."""
        await self.ownership.open()
        try:
            await self.bus.open()
        except BaseException:
            await self.ownership.close()
            raise

    def on_lost(self, hook: Callable[[], None]) -> None:
        """Call `hook` (once) when this process has lost its place in the cluster."""
        self._hooks.append(hook)

    def _lose(self) -> None:
        if self.lost:
            return
        self.lost = True
        log.error("cluster_membership_lost", action="taking no new work and shutting down")
        for hook in self._hooks:
            try:
                hook()
            except Exception:
                log.exception("cluster_lost_hook_failed")

    def exclusive(self, name: str) -> AbstractAsyncContextManager[None]:
        """A block that runs in one process of the cluster at a time (the knowledge base's indexing)."""
        return self.ownership.exclusive(name)

    async def close(self) -> None:
        """Give everything back: the bus first, then the locks (after the actors have stopped)."""
        await self.bus.close()
        await self.ownership.close()
