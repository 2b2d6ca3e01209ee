"""Admission control: at most N turns run at once, the others wait, the oldest message first.

The N shrinks while webhooks are slow to be acknowledged (see `Admission`): the acks come first.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

# The webhook's acknowledgement is what Meta judges us by: above this, turns yield the core to it.
ACK_TARGET_SECONDS = 0.020
# How often the turn limit is reconsidered, and how long without webhooks means "no ingest going on".
WINDOW_SECONDS = 0.050
QUIET_SECONDS = 0.250


class Draining(Exception):
    """The process is stopping: a turn that has not begun does not begin (its messages stay pending)."""


class Admission:
    """A gate in front of turns (BOT_MAX_CONCURRENT_TURNS), served in order of the messages' arrival.

    Waiting costs nothing but a future: the messages are safe in the inbox meanwhile, and the
    webhook never waits here. The order is the order in which the messages were stored (their inbox
    id), not the order in which turns asked: a conversation taken over from a process that died, or
    one whose turn was retried, has older messages and goes before the newer ones that queued meanwhile.

    Ingest comes first. Turns and webhooks share one event loop (and one core), so the number of
    turns allowed to start adapts to how fast webhooks are acknowledged, as a congestion window
    does (additive increase, multiplicative decrease): every `WINDOW_SECONDS`, if the slowest ack
    took longer than `ack_target` in this window and the one before, the allowance is cut by a third
    (never below one, so replies always progress); otherwise it grows by one. Turns already running
    finish; only new ones wait. With no webhook for `QUIET_SECONDS` the full limit applies at once.
    A flood therefore slows the replies, not the acks, and the messages that queue meanwhile are
    folded into fewer, larger turns.
    """

    def __init__(self, limit: int, *, ack_target: float = ACK_TARGET_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.allowed = limit  # the limit in force now (≤ limit), see the class docstring
        self.running = 0
        self.closed = False
        self._ack_target = ack_target
        self._clock = clock
        self._window_start = clock()
        self._window_slowest = 0.0
        self._slow_windows = 0
        self._last_ack = float("-inf")
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        """Turns waiting for a slot."""
        return sum(1 for _, _, f in self._waiters if not f.done())

    def acked(self, seconds: float) -> None:
        """A webhook was acknowledged `seconds` after it reached its handler: adjust the turns' allowance."""
        now = self._clock()
        if now - self._last_ack > QUIET_SECONDS:
            # Ingest starts again after a quiet spell: the turns start from a quarter of the limit and
            # grow while the acks stay fast (a slow start: a flood's first acks are not the ones that
            # pay for every slot having been handed out at once).
            self.allowed = min(self.allowed, max(1, self.limit // 4))
            self._window_start, self._window_slowest, self._slow_windows = now, 0.0, 0
        self._last_ack = now
        self._window_slowest = max(self._window_slowest, seconds)
        if now - self._window_start < WINDOW_SECONDS:
            return
        if self._window_slowest > self._ack_target:
            # Two slow windows in a row: one alone is as likely a pause of the whole process (a garbage
            # collection, a checkpoint) as turns crowding the webhooks out, and fewer turns would not help.
            self._slow_windows += 1
            if self._slow_windows >= 2:
                self.allowed = max(1, self.allowed * 2 // 3)
        else:
            self._slow_windows = 0
            if self.allowed < self.limit:
                self.allowed += 1
                self._next()
        self._window_start, self._window_slowest = now, 0.0

    def _limit_now(self) -> int:
        if self.allowed < self.limit and self._clock() - self._last_ack > QUIET_SECONDS:
            self.allowed = self.limit  # ingest went quiet: every slot is the turns' again
        return self.allowed

    def slot(self, order: float = float("inf")) -> _Slot:
        """Hold one of the slots for an `async with` block; the lowest `order` waiting goes first (ties: first
        come). Raises Draining once `close` was called."""
        return _Slot(self, order)

    async def _acquire(self, order: float) -> None:
        if self.closed:
            raise Draining
        if self.running >= self._limit_now() or self._waiters:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (order, next(self._seq), future))
            self._next()  # the limit may have grown since the last hand-out (ingest went quiet)
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

    def _release(self) -> None:
        self.running -= 1
        self._next()

    def _next(self) -> None:
        """Hand free slots to the oldest waiters (once closed, wake every waiter: each gives up)."""
        limit = self._limit_now()
        while self._waiters and (self.closed or self.running < limit):
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                self.running += 1
                future.set_result(None)

    def close(self) -> None:
        """At shutdown: turns already running finish, those still waiting give up at once (not started,
        their messages stay pending for the next start, or for another process)."""
        self.closed = True
        self._next()


class _Slot:
    """`async with admission.slot(order):` a small object, not a generator-based context manager: a turn
    waiting for its slot holds this (two slots' worth of bytes) instead of a suspended generator frame
    (about 0.5 KiB more), and thousands wait at once under a flood."""

    __slots__ = ("_gate", "_order")

    def __init__(self, gate: Admission, order: float) -> None:
        self._gate = gate
        self._order = order

    async def __aenter__(self) -> None:
        await self._gate._acquire(self._order)

    async def __aexit__(self, *exc: object) -> None:
        self._gate._release()
