"""Admission control: at most N turns run at once, the others wait, the oldest message first."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Draining(Exception):
    """The process is stopping: a turn that has not begun does not begin (its messages stay pending)."""


class Admission:
    """A gate in front of turns (BOT_MAX_CONCURRENT_TURNS), served in order of the messages' arrival.

    Waiting costs nothing but a future: the messages are safe in the inbox meanwhile, and the
    webhook never waits here, so a flood slows the replies, never the acks. The order is the order
    in which the messages were stored (their inbox id), not the order in which turns asked: a
    conversation taken over from a process that died, or one whose turn was retried, has older
    messages and goes before the newer ones that queued meanwhile.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.closed = False
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        """Turns waiting for a slot."""
        return sum(1 for _, _, f in self._waiters if not f.done())

    @asynccontextmanager
    async def slot(self, order: float = float("inf")) -> AsyncIterator[None]:
        """Hold one of the N slots for the block; the lowest `order` waiting goes first (ties: first come).

        Raises Draining once `close` was called.
        """
        if self.closed:
            raise Draining
        if self.running >= self.limit or self._waiters:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (order, next(self._seq), future))
            try:
                await future  # `_next` counts us as running when it hands us the slot
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # handed a slot just as we were cancelled: pass it on
                raise
            if self.closed:
                self._release()
                raise Draining
        else:
            self.running += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self.running -= 1
        self._next()

    def _next(self) -> None:
        """Hand free slots to the oldest waiters (once closed, wake every waiter: each gives up)."""
        while self._waiters and (self.closed or self.running < self.limit):
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                self.running += 1
                future.set_result(None)

    def close(self) -> None:
        """At shutdown: turns already running finish, those still waiting give up at once (not started,
        their messages stay pending for the next start, or for another process)."""
        self.closed = True
        self._next()
