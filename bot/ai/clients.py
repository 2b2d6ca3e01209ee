"""OpenAI SDK clients, one per key and base URL, at most a few: every key tried on the settings page
would otherwise keep a client (and its connection pool) for the life of the process."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import openai

ClientFactory = Callable[[str, str | None], openai.AsyncOpenAI]


@dataclass(slots=True, eq=False)
class _Entry:
    client: openai.AsyncOpenAI
    users: int = 0
    evicted: bool = False
    closed: bool = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.client.close()


class ClientPool:
    """Up to `size` SDK clients, least recently used first out.

    A client is only ever used inside `lease()`. One pushed out while calls still hold it is closed
    when the last of them ends, never under a call. Entries are keyed by a hash of the key, so the
    pool's own bookkeeping holds no key in clear.
    """

    def __init__(self, factory: ClientFactory, *, size: int = 8) -> None:
        self._factory = factory
        self._size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._evicted_in_use: set[_Entry] = set()

    @staticmethod
    def _key(api_key: str, base_url: str | None) -> str:
        return hashlib.sha256(f"{base_url or ''}\n{api_key}".encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def lease(self, api_key: str, base_url: str | None) -> AsyncIterator[openai.AsyncOpenAI]:
        """The client for this key and base URL, held for the duration of the `async with`."""
        key = self._key(api_key, base_url)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(self._factory(api_key, base_url))
        else:
            self._entries.move_to_end(key)
        entry.users += 1
        try:
            await self._evict()
            yield entry.client
        finally:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                self._evicted_in_use.discard(entry)
                await entry.close()

    async def _evict(self) -> None:
        while len(self._entries) > self._size:
            _, oldest = self._entries.popitem(last=False)
            oldest.evicted = True
            if oldest.users:
                self._evicted_in_use.add(oldest)  # its last call closes it
            else:
                await oldest.close()

    async def close(self) -> None:
        """Close every client (at shutdown, when no call should be running any more)."""
        entries = [*self._entries.values(), *self._evicted_in_use]
        self._entries.clear()
        self._evicted_in_use.clear()
        for entry in entries:
            entry.evicted = True
            await entry.close()

