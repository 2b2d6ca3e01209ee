"""The registry of a process that shares PostgreSQL with others: actors run only where their lock is held.

`tell` is the same as in one process, and so is everything behind it: the actor model stays the
programming model inside each process. What changes is the first `tell` for a conversation: its
lock is claimed (in a batch with others) before its actor activates, and when another process holds
it, the owner is woken instead (the work is in the database already). When an actor passivates, its
lock is released. The sweeper claims whatever work nobody has picked up.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any

import structlog

from bot.actors.base import Actor
from bot.actors.conversation import Reload, Wake
from bot.actors.registry import Registry
from bot.cluster.bus import Bus
from bot.cluster.ownership import Ownership
from bot.domain.conversation import ConversationKey
from bot.persistence.database import Database, Stmt

log = structlog.get_logger("bot.cluster")

SWEEP_SECONDS = 1.0
# Work younger than this is left to the process that stored it (it is claiming it right now).
SWEEP_GRACE_SECONDS = 2.0
SWEEP_LIMIT = 500

# The inbox part reads pending rows only (the partial index of migration 0011): a condition on
# received_at alone would let the planner walk every message older than the grace, handled or not.
_UNCLAIMED = (
    "SELECT phone_number_id, customer_id FROM inbox WHERE status = 'pending' GROUP BY phone_number_id, customer_id "
    "HAVING MIN(received_at) < $1 "
    "UNION SELECT phone_number_id, customer_id FROM commands WHERE created_at < $1 "
    "UNION SELECT phone_number_id, customer_id FROM outbox WHERE status IN ('queued', 'sending') AND updated_at < $1 "
    "LIMIT $2"
)


def _is_human(message: Any) -> bool:
    return isinstance(message, Wake) and message.human


class ClusterRegistry:
    """A local Registry whose actors activate only once their conversation's lock is ours."""

    def __init__(self, local: Registry[ConversationKey], *, db: Database, ownership: Ownership, bus: Bus) -> None:
        self.local = local
        self._db = db
        self._ownership = ownership
        self._bus = bus
        self._owned: set[ConversationKey] = set()
        self._waiting: dict[ConversationKey, list[Any]] = {}
        self._from_bus: set[ConversationKey] = set()  # woken for by another process: never woken back
        self._signal = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.closing = False
        self.claimed = self.handed_on = 0  # counters for the diagnostics and tests
        local.on_passivated = self._passivated
        bus.on_wake = self._woken
        bus.on_reload = lambda: local.tell_all(Reload())

    def start(self) -> None:
        """Start the claimer and the sweeper (tasks owned here, cancelled by `stop_all`)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._claimer(), name="cluster-claimer"),
                       loop.create_task(self._sweeper(), name="cluster-sweeper")]

    # -- the Registry interface ----------------------------------------------------------------
    def tell(self, key: ConversationKey, message: Any) -> None:
        """Deliver to our actor, or claim the conversation first (its messages wait meanwhile)."""
        if self.closing:
            return  # the work is durable: whoever holds the lock next picks it up
        if key in self._owned:
            self.local.tell(key, message)
            return
        self._waiting.setdefault(key, []).append(message)
        self._signal.set()

    def tell_all(self, message: Any) -> None:
        """Every live actor here, and (for a Reload) every other process's."""
        self.local.tell_all(message)
        if isinstance(message, Reload):
            task = asyncio.get_running_loop().create_task(self._bus.reload())
            task.add_done_callback(_log_failure)

    def get(self, key: ConversationKey) -> Actor[ConversationKey] | None:
        """Our live actor for a key, if any."""
        return self.local.get(key)

    @property
    def live(self) -> int:
        """Actors in memory in this process."""
        return self.local.live

    def owns(self, key: ConversationKey) -> bool:
        """Whether this process holds the conversation's lock now."""
        return key in self._owned

    @property
    def owned(self) -> int:
        """Conversations this process holds the lock of."""
        return len(self._owned)

    def give_up(self) -> None:
        """Our locks are gone (the lock connection died): take no more work, another process has it now."""
        self.closing = True
        for task in self._tasks:
            task.cancel()

    async def stop_all(self, timeout: float) -> None:
        """Drain: take no new work, let the actors finish what they hold, then give every lock back."""
        self.closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        await self.local.stop_all(timeout)
        owned, self._owned = list(self._owned), set()
        log.info("conversations_handed_back", count=len(owned))
        with suppress(Exception):  # closing the ownership connection releases them anyway
            await self._ownership.release(owned)

    # -- claiming ------------------------------------------------------------------------------
    async def _claimer(self) -> None:
        while True:
            await self._signal.wait()
            self._signal.clear()
            waiting, self._waiting = self._waiting, {}
            from_bus, self._from_bus = self._from_bus, set()
            try:
                await self._claim(waiting, from_bus)
            except Exception as exc:
                # The lock connection is in trouble: the work is durable, the sweeper retries it.
                log.warning("claim_failed", error=str(exc), conversations=len(waiting))
                await asyncio.sleep(SWEEP_SECONDS)

    async def _claim(self, waiting: dict[ConversationKey, list[Any]], from_bus: set[ConversationKey]) -> None:
        keys = [k for k in waiting if k not in self._owned]
        granted = await self._ownership.claim(keys) if keys else set()
        if granted:
            await self._activate(granted, waiting)
        # Held elsewhere: wake the holder (the work is in the database). A wake that came from another
        # process is not sent back: whoever holds the lock was told, or the sweeper finds the work.
        others = [(k, any(_is_human(m) for m in msgs)) for k, msgs in waiting.items()
                  if k not in granted and k not in self._owned and k not in from_bus]
        for key, messages in waiting.items():
            if key in self._owned and key not in granted:
                for message in messages:  # became ours meanwhile (an earlier batch)
                    self.local.tell(key, message)
        if others:
            self.handed_on += len(others)
            await self._bus.wake(others)

    async def _activate(self, granted: set[ConversationKey], waiting: dict[ConversationKey, list[Any]]) -> None:
        """Ours now: sends a previous owner left mid-flight are never repeated, then the actors start."""
        keys = list(granted)
        businesses = [k.business for k in keys]
        customers = [k.customer for k in keys]
        await self._db.write([Stmt(
            "UPDATE outbox SET status = 'unknown', error_reason = 'interrupted while sending; not resent to avoid a "
            "duplicate', updated_at = $3 FROM unnest($1::text[], $2::text[]) AS k(b, c) "
            "WHERE status = 'sending' AND outbox.phone_number_id = k.b AND outbox.customer_id = k.c",
            (businesses, customers, time.time()))], keys=sorted((k.business, k.customer) for k in keys))
        self._owned |= granted
        self.claimed += len(granted)
        for key in keys:
            messages = waiting.get(key, [Wake()])
            # Another process may have stored work for it while nobody held the lock: look first.
            if not any(isinstance(m, Wake) for m in messages):
                messages = [Wake(), *messages]
            for message in messages:
                self.local.tell(key, message)

    def _passivated(self, key: ConversationKey) -> None:
        """Our actor for `key` stopped (idle): give its lock back unless it came back meanwhile."""
        if key not in self._owned or self.local.get(key) is not None or self.closing:
            return
        self._owned.discard(key)
        task = asyncio.get_running_loop().create_task(self._ownership.release([key]))
        task.add_done_callback(_log_failure)

    def _woken(self, key: ConversationKey, human: bool) -> None:
        """Another process stored work for a conversation it saw as ours.

        If it is no longer ours (our actor passivated and gave the lock back just then), we claim it:
        nobody may hold it now, and the work would otherwise wait for a sweep.
        """
        if key in self._owned:
            self.local.tell(key, Wake(human=human))
        elif not self.closing:
            self._waiting.setdefault(key, []).append(Wake(human=human))
            self._from_bus.add(key)
            self._signal.set()

    # -- the sweeper ---------------------------------------------------------------------------
    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("sweep_failed", error=str(exc))

    async def sweep(self, *, grace: float = SWEEP_GRACE_SECONDS) -> int:
        """Claim work that waits with nobody on it (a dead process's, or a lost notification's); returns how many.

        `grace`: work younger than this is left to the process that stored it (0 at start-up).
        """
        if self.closing:
            return 0
        rows = await self._db.fetch(_UNCLAIMED, time.time() - grace, SWEEP_LIMIT)
        keys = {ConversationKey(r[0], r[1]) for r in rows}
        idle_here = [k for k in keys if k in self._owned and _idle(self.local.get(k))]
        for key in idle_here:  # ours, but its actor did not hear of it: a notification was lost
            self.local.tell(key, Wake())
        unowned = [k for k in keys if k not in self._owned and k not in self._waiting]
        if not unowned:
            return len(idle_here)
        granted = await self._ownership.claim(unowned)
        if granted:
            log.info("conversations_taken_over", count=len(granted))
            await self._activate(granted, {})
        return len(granted) + len(idle_here)


def _idle(actor: Actor[ConversationKey] | None) -> bool:
    return actor is None or (actor.task is None and not actor.queued())


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("cluster_task_failed", error=str(task.exception()))

