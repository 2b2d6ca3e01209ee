"""LISTEN/NOTIFY between the server processes: wake-ups for a conversation's owner, live inbox events.

A notification is a hint, never the work itself (that is in the database), so one lost while a
connection reconnects costs a sweep's delay, not a message. Live events are batched into one
NOTIFY every `flush_seconds`: a flood of messages would otherwise be a flood of notifications.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import orjson
import structlog

from bot.cluster.ownership import Connect
from bot.domain.conversation import ConversationKey

log = structlog.get_logger("bot.cluster")

WAKE = "bot_wake"
LIVE = "bot_live"
RELOAD = "bot_reload"
MAX_PAYLOAD = 7000  # PostgreSQL allows 8000 bytes per notification


class Bus:
    """One LISTEN connection and one NOTIFY connection per process (the listener must never block)."""

    def __init__(self, connect: Connect, *, on_lost: Callable[[], None], flush_seconds: float = 0.1) -> None:
        self._connect = connect
        self._on_lost = on_lost
        self._flush = flush_seconds
        self.node = secrets.token_hex(6)  # our own notifications come back to us: skip them
        self._listen: Any = None
        self._send: Any = None
        self._send_lock = asyncio.Lock()
        self._live: list[tuple[str, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self._channels: dict[str, str] = {}
        self._names: dict[str, str] = {}
        self.closing = False
        self.on_wake: Callable[[ConversationKey, bool], None] = lambda key, human: None
        self.on_live: Callable[[str, dict[str, Any]], None] = lambda kind, data: None
        self.on_reload: Callable[[], None] = lambda: None

    async def open(self) -> None:
        """Connect and subscribe."""
        self._listen = await self._connect()
        self._send = await self._connect()
        # Channels are database-wide: one set per schema, so installations sharing a database never mix.
        suffix = await self._listen.fetchval("SELECT abs(hashtext(current_schema()))")
        self._channels = {name: f"{name}_{suffix}" for name in (WAKE, LIVE, RELOAD)}
        self._names = {v: k for k, v in self._channels.items()}
        for channel in self._channels.values():
            await self._listen.add_listener(channel, self._received)
        self._listen.add_termination_listener(self._terminated)
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="cluster-live")

    def _terminated(self, _conn: Any) -> None:
        if not self.closing:
            log.error("bus_connection_lost")
            self._on_lost()

    def _received(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict) or data.get("node") == self.node:
            return
        channel = self._names.get(channel, channel)
        if channel == WAKE:
            for business, customer, human in data.get("keys", []):
                self.on_wake(ConversationKey(str(business), str(customer)), bool(human))
        elif channel == LIVE:
            for kind, event in data.get("events", []):
                self.on_live(str(kind), dict(event))
        elif channel == RELOAD:
            self.on_reload()

    async def _notify(self, channel: str, payload: dict[str, Any]) -> None:
        body = orjson.dumps({"node": self.node, **payload}).decode()
        async with self._send_lock:
            await self._send.execute("SELECT pg_notify($1, $2)", self._channels[channel], body)

    async def wake(self, keys: list[tuple[ConversationKey, bool]]) -> None:
        """Tell whichever process owns these conversations to look at their durable mailbox."""
        for start in range(0, len(keys), 100):
            chunk = [[k.business, k.customer, human] for k, human in keys[start:start + 100]]
            await self._notify(WAKE, {"keys": chunk})

    async def reload(self) -> None:
        """Every process's live actors read their conversations again (after a sessions reset)."""
        await self._notify(RELOAD, {})

    def live(self, kind: str, data: dict[str, Any]) -> None:
        """Queue a live inbox event for the other processes (sent in the next batch)."""
        if not self.closing:
            self._live.append((kind, data))

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._flush)
            if not self._live:
                continue
            events, self._live = self._live, []
            batch: list[tuple[str, dict[str, Any]]] = []
            size = 0
            try:
                for event in events:
                    encoded = len(orjson.dumps(event))
                    if batch and size + encoded > MAX_PAYLOAD:
                        await self._notify(LIVE, {"events": batch})
                        batch, size = [], 0
                    batch.append(event)
                    size += encoded
                if batch:
                    await self._notify(LIVE, {"events": batch})
            except Exception as exc:  # a live event is a nicety: the page reloads its lists anyway
                log.warning("live_relay_failed", error=str(exc))

    async def close(self) -> None:
        """Stop relaying and disconnect."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for conn in (self._listen, self._send):
            if conn is not None:
                with suppress(Exception):
                    await conn.close()
