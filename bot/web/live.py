"""Live updates for operators' browsers: a small in-process event hub served as server-sent events."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

# Enough for a browser that lost its connection for a while to catch up without a reload.
BUFFER = 2000


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One change an operator's page may want to show."""

    id: int
    kind: str  # message | status | conversation
    data: dict[str, Any]

    def encode(self) -> bytes:
        """The SSE wire form."""
        payload = orjson.dumps({"kind": self.kind, **self.data})
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (self.id, self.kind.encode(), payload)


class LiveHub:
    """Keeps the last events in a ring buffer and wakes every open stream on publish."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._events: deque[LiveEvent] = deque(maxlen=BUFFER)
        self._changed = asyncio.Event()
        self.closed = False
        # With several processes: every event published here goes to the others too (bot/cluster/bus.py).
        self.relay: Callable[[str, dict[str, Any]], None] | None = None

    def publish(self, kind: str, **data: Any) -> None:
        """Record an event and wake the streams (never blocks the caller)."""
        if self.relay is not None and not self.closed:
            self.relay(kind, data)
        self.received(kind, data)

    def received(self, kind: str, data: dict[str, Any]) -> None:
        """Record an event (this process's, or relayed from another) and wake the streams."""
        if self.closed:
            return
        self._events.append(LiveEvent(next(self._ids), kind, data))
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def last_id(self) -> int:
        """The id of the newest event, 0 when none."""
        return self._events[-1].id if self._events else 0

    def since(self, last_id: int) -> list[LiveEvent] | None:
        """Events after `last_id`, or None when some were already dropped (the page must reload)."""
        if self._events and last_id < self._events[0].id - 1:
            return None
        return [e for e in self._events if e.id > last_id]

    @property
    def signal(self) -> asyncio.Event:
        """Set by the next publish. Take it *before* reading `since`, so no publish slips in between."""
        return self._changed

    @staticmethod
    async def wait(signal: asyncio.Event, timeout: float) -> None:
        """Wait for a signal taken earlier, or the timeout (used for keep-alives)."""
        try:
            await asyncio.wait_for(signal.wait(), timeout)
        except TimeoutError:
            pass

    def close(self) -> None:
        """Wake every stream so it can end (at shutdown)."""
        self.closed = True
        self._changed.set()
