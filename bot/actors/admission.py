"""Admission control: at most N turns run at once, the others wait in arrival order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Draining(Exception):
    """The process is stopping: a turn that has not begun does not begin (its messages stay pending)."""


class Admission:
    """A FIFO gate in front of turns (BOT_MAX_CONCURRENT_TURNS).

    Waiting costs nothing but a future: the messages are safe in the inbox meanwhile, and the
    webhook never waits here, so a flood slows the replies, never the acks.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self.running = 0
        self.waiting = 0
        self.closed = False

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the N slots for the duration of the block; raises Draining once `close` was called."""
        if self.closed:
            raise Draining
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        if self.closed:
            self._semaphore.release()  # wakes the next waiter, which raises too
            raise Draining
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._semaphore.release()

    def close(self) -> None:
        """At shutdown: turns already running finish, those still waiting give up at once (not started,
        their messages stay pending for the next start, or for another process)."""
        self.closed = True
        if self.waiting:
            self._semaphore.release()
