"""A slim actor: a list mailbox, a run loop that handles one message at a time, and nothing else while idle."""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

log = structlog.get_logger("bot.actors")

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Stop:
    """The stop marker: enqueued behind pending work, so everything before it is handled first."""


class ActorDeadError(RuntimeError):
    """Raised for a tell to an actor that has stopped (the registry routes around this)."""


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class IdleClock:
    """Passivates idle actors with one timer for all of them, not one each.

    An event-loop timer costs about 600 bytes (uvloop's handle, its libuv timer, the bound method and
    the copied context), more than a third of an idle actor. Actors with the same idle time go idle
    in time order, so each idle time keeps its actors in the order they went idle (deadline order),
    and one timer waits for the earliest deadline. Starting again takes an actor out in O(1).
    """

    __slots__ = ("_context", "_queues", "_timer", "_timer_at")

    def __init__(self) -> None:
        self._queues: dict[float, OrderedDict[Actor[Any], float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # Passivation belongs to no request: it runs in an empty context, not in the one of whichever
        # actor happened to arm the timer (whose log fields it would otherwise carry).
        self._context = contextvars.Context()

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def add(self, actor: Actor[Any]) -> None:
        """`actor` went idle: passivate it after its `idle_seconds`, unless it is discarded first."""
        loop = asyncio.get_running_loop()
        due = loop.time() + actor.idle_seconds
        queue = self._queues.setdefault(actor.idle_seconds, OrderedDict())
        queue.pop(actor, None)  # re-added: it goes to the end, where its new deadline belongs
        queue[actor] = due
        if due < self._timer_at:
            self._arm(loop, due)

    def discard(self, actor: Actor[Any]) -> None:
        """`actor` is busy again, or stopped: no passivation for it (the timer may fire for nothing)."""
        queue = self._queues.get(actor.idle_seconds)
        if queue is not None:
            queue.pop(actor, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(at, self._fire, context=self._context), at

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        loop = asyncio.get_running_loop()
        now, due, following = loop.time(), [], math.inf
        for seconds, queue in list(self._queues.items()):
            while queue:
                actor, at = next(iter(queue.items()))
                if at > now:
                    following = min(following, at)
                    break
                del queue[actor]
                due.append(actor)
            if not queue:
                del self._queues[seconds]
        if following < math.inf:
            self._arm(loop, following)
        for actor in due:
            try:
                actor._passivate()
            except Exception:
                # One timer serves them all: a failing passivation must not leave the others live for good.
                log.exception("actor_passivation_failed", actor=str(actor.key))


class Actor(Generic[K]):
    """Base class for actors.

    Lifecycle: the registry creates an actor on the first `tell` for its key. A `tell` starts the
    run loop (a task the actor owns) if it is not running; the loop takes one message at a time and
    awaits `handle`, so subclasses need no locks, and it ends when the mailbox is empty. An idle
    actor therefore holds no task and no coroutine, only its mailbox, its state and a place in an
    `IdleClock` (shared by the actors given the same one): when it has stayed idle for
    `idle_seconds`, `on_exit` tells the registry to forget this incarnation (passivation), and a
    later `tell` creates a fresh one. State lives in the database, so passivation loses nothing.
    `Stop` ends the actor after the messages queued before it.
    """

    __slots__ = ("_clock", "_mailbox", "_on_exit", "_task", "_waiter", "idle_seconds", "key", "stopped")

    def __init__(self, key: K, *, idle_seconds: float, on_exit: Callable[[Actor[K]], None],
                 clock: IdleClock | None = None) -> None:
        self.key = key
        self.idle_seconds = idle_seconds
        self._clock = clock if clock is not None else IdleClock()
        # A list, not a deque: an empty deque allocates a 64-slot block (~770 bytes) and an empty list
        # 64 bytes; mailboxes are short (bursts are folded), so pop(0) costs nothing measurable.
        self._mailbox: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_exit = on_exit
        self.stopped = False

    def start(self) -> None:
        """Start the run loop for what is queued (the registry calls this once; `tell` does it after)."""
        self._clock.discard(self)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"actor:{self.key}")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The run loop task, owned by this actor."""
        return self._task

    def tell(self, message: Any) -> None:
        """Enqueue a message without waiting."""
        if self.stopped:
            raise ActorDeadError(f"actor {self.key} has stopped")
        self._mailbox.append(message)
        if self._task is None:
            self.start()
        else:
            _wake(self._waiter)

    def pending(self) -> list[Any]:
        """Messages not yet taken (used to hand them to the next incarnation)."""
        return list(self._mailbox)

    async def receive(self, timeout: float | None) -> Any | None:
        """Inside `handle`: take the next message, waiting up to `timeout` seconds; None on timeout."""
        if not self._mailbox:
            await self._wait(timeout)
        return self._mailbox.pop(0) if self._mailbox else None

    async def arrival(self, timeout: float) -> bool:
        """Inside `handle`: wait up to `timeout` seconds for a message (not taking it); False on timeout."""
        if not self._mailbox:
            await self._wait(timeout)
        return bool(self._mailbox)

    def peek_all(self) -> list[Any]:
        """Inside `handle`: take every message already queued, without waiting."""
        items = list(self._mailbox)
        self._mailbox.clear()
        return items

    def push_front(self, messages: list[Any]) -> None:
        """Inside `handle`: put messages back at the head of the mailbox, in their order."""
        self._mailbox[:0] = messages

    def queued(self) -> list[Any]:
        """Inside `handle`: the messages waiting now, without taking them."""
        return self._mailbox

    def take(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """Inside `handle`: take the waiting messages for which `predicate` is true, keeping the others."""
        taken = [m for m in self._mailbox if predicate(m)]
        if taken:
            self._mailbox[:] = [m for m in self._mailbox if not predicate(m)]
        return taken

    async def until_done_or(self, task: asyncio.Task[Any], interrupts: Callable[[Any], bool]) -> bool:
        """Inside `handle`: await `task`, unless a message for which `interrupts` is true arrives first.

        Then the task is cancelled (and awaited) and False is returned; the message stays queued
        for the loop. An actor never blocks on its own mailbox, so this is how a long step (a model
        call) gives way to something more important (a person stepping in).
        """
        loop = asyncio.get_running_loop()
        try:
            while not task.done():
                if any(interrupts(m) for m in self._mailbox):
                    task.cancel()
                    await asyncio.wait({task})
                    return False
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiter = waiter
                try:
                    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._waiter = None
                    if not waiter.done():
                        waiter.cancel()
        except asyncio.CancelledError:
            task.cancel()  # our own cancellation (shutdown) takes the step with it
            raise
        return True

    async def _wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        handle = loop.call_later(timeout, _wake, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._waiter = None

    async def _run(self) -> None:
        stopping = False
        try:
            while self._mailbox:
                message = self._mailbox.pop(0)
                if isinstance(message, Stop):
                    stopping = True
                    break
                try:
                    await self.handle(message)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # handle() supervises its own turns; reaching here is a bug, never a reason to die.
                    log.exception("actor_message_crashed", actor=str(self.key))
        except asyncio.CancelledError:
            stopping = True
            raise
        finally:
            # No await between the last mailbox check and this: a tell cannot slip in unseen.
            self._task = None
            if stopping:
                self._exit()
            else:
                self._clock.add(self)

    def _passivate(self) -> None:
        if self._task is None and not self._mailbox and not self.stopped:
            self._exit()

    def _exit(self) -> None:
        self._clock.discard(self)
        self.stopped = True
        self._on_exit(self)

    async def handle(self, message: Any) -> None:
        """Handle one message. Subclasses override this."""
        raise NotImplementedError

    async def stop(self, timeout: float) -> None:
        """Enqueue Stop behind pending work, wait up to `timeout`, then cancel."""
        if self.stopped:
            return
        task = self._task
        if task is None:
            self._mailbox.append(Stop())
            self.start()
            task = self._task
            assert task is not None
        else:
            self._mailbox.append(Stop())
            _wake(self._waiter)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
