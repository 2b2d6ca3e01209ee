"""The idle actor alone: `python -m bench.actor_mem N` prints its cost per actor as JSON.

N real `ConversationActor`s are activated through the real `Registry`, each handles one message
(a `Flush` whose outbox is empty, so no database or HTTP work), and then sits idle in its run loop
waiting for the next message, exactly like an actor between turns. The cost is read two ways:
tracemalloc (Python objects only) and VmRSS (everything, including allocator slack).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import sys
import tracemalloc
from typing import Any

from bench.common import PHONE_NUMBER_ID, rss_kib
from bench.loadgen import customer_wa_id
from bot.actors.base import Actor
from bot.actors.conversation import ConversationActor, ConversationDeps, ConversationKey, Flush
from bot.actors.registry import Registry


class NoOutbox:
    """Stands in for Outbound: nothing is ever queued."""

    async def flush(self, phone_number_id: str, customer_id: str) -> None:
        """Nothing to send."""


def _deps(idle_seconds: float) -> ConversationDeps:
    """Real deps type, stub values: a Flush touches only `outbound` and `idle_seconds`.

    Built from the dataclass fields so that the benchmark follows ConversationDeps as it changes.
    """
    values: dict[str, Any] = {
        f.name: None for f in dataclasses.fields(ConversationDeps)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    values |= {"outbound": NoOutbox(), "idle_seconds": idle_seconds}
    return ConversationDeps(**values)


async def measure(n: int) -> dict[str, Any]:
    """Activate n actors, let each go idle, and measure what they hold."""
    deps = _deps(3600.0)

    def factory(key: ConversationKey, on_exit: Any) -> Actor[ConversationKey]:
        return ConversationActor(key, deps, on_exit)

    registry: Registry[ConversationKey] = Registry(factory)
    # Keys are built before the baseline: the server gets them from the webhook either way.
    keys = [(PHONE_NUMBER_ID, customer_wa_id(i)) for i in range(n)]
    await asyncio.sleep(0)
    gc.collect()
    rss_before = rss_kib_self()
    tracemalloc.start()
    traced_before, _ = tracemalloc.get_traced_memory()
    for key in keys:
        registry.tell(key, Flush())
    for _ in range(5):  # each actor: start, take the message, handle it, go back to waiting
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)
    gc.collect()
    traced_after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # RSS is read in a second run of the same steps without tracemalloc (it adds its own overhead).
    assert registry.live == n
    await registry.stop_all(5.0)
    return {"actors": n, "traced_bytes_per_actor": round((traced_after - traced_before) / n, 1),
            "rss_before_kib": rss_before}


async def measure_rss(n: int) -> dict[str, Any]:
    """The same activation without tracemalloc, read from VmRSS."""
    deps = _deps(3600.0)

    def factory(key: ConversationKey, on_exit: Any) -> Actor[ConversationKey]:
        return ConversationActor(key, deps, on_exit)

    registry: Registry[ConversationKey] = Registry(factory)
    keys = [(PHONE_NUMBER_ID, customer_wa_id(i)) for i in range(n)]
    gc.collect()
    before = rss_kib_self()
    for key in keys:
        registry.tell(key, Flush())
    await asyncio.sleep(0.2)
    gc.collect()
    after = rss_kib_self()
    assert registry.live == n
    await registry.stop_all(5.0)
    return {"rss_bytes_per_actor": round((after - before) * 1024 / n, 1)}


def rss_kib_self() -> int:
    """This process's VmRSS in KiB."""
    import os

    return rss_kib(os.getpid())


async def main(n: int) -> dict[str, Any]:
    """Both measurements, RSS first (a fresh heap)."""
    rss = await measure_rss(n)
    traced = await measure(n)
    return {**traced, **rss}


if __name__ == "__main__":
    import uvloop

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(json.dumps(uvloop.run(main(count))))
