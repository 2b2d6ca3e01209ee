"""The idle actor alone: `python -m bench.actor_mem N` prints its cost per actor as JSON.

N real `ConversationActor`s are activated through the real `Registry`, each handles one message
(a `Reload`, so no database or HTTP work), is given the conversation and contact it caches between
turns (realistic values), and then sits idle in its run loop waiting for the next message, exactly
like an actor between turns. The cost is read two ways: tracemalloc (Python objects only) and VmRSS
(everything, including allocator slack).
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
from bot.actors.conversation import ConversationActor, ConversationDeps, Reload
from bot.actors.registry import Registry
from bot.domain.conversation import ConversationKey
from bot.persistence.conversations import Conversation, new_session_id
from bot.persistence.crm import Contact


def _state(i: int, key: ConversationKey) -> tuple[Conversation, Contact]:
    """What an actor holds after a turn: its conversation and contact rows, with real-sized strings."""
    now = 1.8e9 + i
    conv = Conversation(id=i, phone_number_id=key.business, customer_id=key.customer, wa_id=key.customer,
                        user_id=None, profile_name=f"Bench {i}", session_id=new_session_id(),
                        last_response_id="resp_" + "0" * 48, last_response_at=now, language="en", paused=False,
                        paused_until=None, paused_since=None, needs_human=False, is_test=False, state="active",
                        last_inbound_at=now, last_outbound_at=now, last_message_preview="Echo: hello [s1]",
                        last_activity_at=now)
    contact = Contact(id=i, phone_number_id=key.business, customer_id=key.customer, wa_id=key.customer, user_id=None,
                      name=f"Bench {i}", name_source="whatsapp", email=None, company=None, language="en", notes=None,
                      created_at=now, updated_at=now)
    return conv, contact


def _deps(idle_seconds: float) -> ConversationDeps:
    """Real deps type, stub values: a Reload touches only `idle_seconds`.

    Built from the dataclass fields so that the benchmark follows ConversationDeps as it changes.
    """
    values: dict[str, Any] = {
        f.name: None for f in dataclasses.fields(ConversationDeps)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    values |= {"idle_seconds": idle_seconds}
    return ConversationDeps(**values)


async def measure(n: int) -> dict[str, Any]:
    """Activate n actors, let each go idle, and measure what they hold."""
    deps = _deps(3600.0)

    def factory(key: ConversationKey, on_exit: Any) -> Actor[ConversationKey]:
        return ConversationActor(key, deps, on_exit)

    registry: Registry[ConversationKey] = Registry(factory)
    # Keys are built before the baseline: the server gets them from the webhook either way.
    keys = [ConversationKey(PHONE_NUMBER_ID, customer_wa_id(i)) for i in range(n)]
    await asyncio.sleep(0)
    gc.collect()
    rss_before = rss_kib_self()
    tracemalloc.start()
    traced_before, _ = tracemalloc.get_traced_memory()
    for key in keys:
        registry.tell(key, Reload())
    for _ in range(5):  # each actor: start, take the message, handle it, go back to waiting
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)
    _cache(registry, keys)
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
    keys = [ConversationKey(PHONE_NUMBER_ID, customer_wa_id(i)) for i in range(n)]
    gc.collect()
    before = rss_kib_self()
    for key in keys:
        registry.tell(key, Reload())
    await asyncio.sleep(0.2)
    _cache(registry, keys)
    gc.collect()
    after = rss_kib_self()
    assert registry.live == n
    await registry.stop_all(5.0)
    return {"rss_bytes_per_actor": round((after - before) * 1024 / n, 1)}


def _cache(registry: Registry[ConversationKey], keys: list[ConversationKey]) -> None:
    for i, key in enumerate(keys):
        actor = registry.get(key)
        assert isinstance(actor, ConversationActor)
        actor.conv, actor.contact = _state(i, key)


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
