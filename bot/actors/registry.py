"""Virtual actors keyed by (business number id, customer id): activated on tell, passivated when idle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

import structlog

from bot.actors.base import Actor, Stop

log = structlog.get_logger("bot.actors")

K = TypeVar("K", bound=Hashable)


class Actors(Protocol):
    """What the rest of the server sees of a registry: this one, or the cluster's (bot/cluster/registry.py)."""

    def tell(self, key: Any, message: Any) -> None: ...

    def tell_all(self, message: Any) -> None: ...

    def get(self, key: Any) -> Actor[Any] | None: ...

    @property
    def live(self) -> int: ...

    async def stop_all(self, timeout: float) -> None: ...


class Registry(Generic[K]):
    """Owns every live actor. Nobody else creates or stops them.

    Kept behind this small interface (tell, live, stop_all) so that a sharded or log-backed
    registry can replace it when one process is no longer enough.
    """

    def __init__(self, factory: Callable[[K, Callable[[Actor[K]], None]], Actor[K]]) -> None:
        self._factory = factory
        self._actors: dict[K, Actor[K]] = {}
        self._closing = False
        # One bound method for every actor's on_exit, not a new one (64 bytes) kept by each.
        self._on_exit: Callable[[Actor[K]], None] = self._exited
        # Called when a key's actor passivated and no new incarnation took its place (the cluster
        # registry gives the conversation's lock back then).
        self.on_passivated: Callable[[K], None] = lambda key: None

    def tell(self, key: K, message: Any) -> None:
        """Deliver a message, activating the actor if it is not live."""
        if self._closing:
            return  # the inbox keeps the work; start-up replay will deliver it
        actor = self._actors.get(key)
        if actor is None or actor.stopped:
            actor = self._factory(key, self._on_exit)
            self._actors[key] = actor
        actor.tell(message)  # starts its run loop if it is idle

    def tell_all(self, message: Any) -> None:
        """Deliver a message to every live actor (e.g. Reload after a reset)."""
        for key in list(self._actors):
            self.tell(key, message)

    def get(self, key: K) -> Actor[K] | None:
        """The live actor for a key, if any."""
        return self._actors.get(key)

    @property
    def live(self) -> int:
        """How many actors are in memory."""
        return len(self._actors)

    def _exited(self, actor: Actor[K]) -> None:
        if self._actors.get(actor.key) is actor:
            del self._actors[actor.key]
        leftovers = [m for m in actor.pending() if not isinstance(m, Stop)]
        if leftovers and not self._closing:
            # A message that raced with passivation goes to the next incarnation, never dropped.
            for message in leftovers:
                self.tell(actor.key, message)
        if actor.key not in self._actors:
            self.on_passivated(actor.key)

    async def stop_all(self, timeout: float) -> None:
        """Graceful stop: every actor finishes what was queued before its Stop, within `timeout`."""
        self._closing = True
        actors = list(self._actors.values())
        if actors:
            await asyncio.gather(*(a.stop(timeout) for a in actors), return_exceptions=True)
        self._actors.clear()
