"""The single writer's queue, shared by both backends: units wait here and are committed in groups.

A group takes every urgent unit (webhook inserts) and at most MAX_UNITS_PER_GROUP others, so that a
flood of turns never makes one commit long enough to delay the next webhooks' acks. The backend
runs a group (one transaction, a savepoint per unit) and sets each unit's outcome; this loop hands
the outcomes back. A group that fails whole (BEGIN, COMMIT, a lost connection) fails every unit of it
with `DatabaseUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from bot.persistence.database import DatabaseUnavailable, Stmt

MAX_UNITS_PER_GROUP = 128


@dataclass(slots=True)
class Unit:
    """A unit of work waiting for the writer, and what became of it."""

    stmts: Sequence[Stmt]
    future: asyncio.Future[list[Any]]
    outcome: list[Any] | BaseException | None = field(default=None)
    keys: Sequence[tuple[str, str]] = ()  # the conversations it touches (see Database.write)


RunGroup = Callable[[list["Unit"]], Awaitable[None]]


class GroupWriter:
    """Queues units and runs them through `run_group`, one group at a time, in a task of its own."""

    def __init__(self, run_group: RunGroup, *, translate: Callable[[Exception], BaseException],
                 name: str, max_units: int = MAX_UNITS_PER_GROUP) -> None:
        self._run_group = run_group
        self._translate = translate
        self._name = name
        self._max_units = max_units
        self._urgent: list[Unit] = []
        self._normal: list[Unit] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.groups = 0  # group commits so far (for the benchmark and tests)

    @property
    def idle(self) -> bool:
        """No unit is waiting."""
        return not self._urgent and not self._normal

    @property
    def running(self) -> bool:
        """The loop is started (and not stopped)."""
        return self._task is not None

    def start(self) -> None:
        """Start the loop (the database is open)."""
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def submit(self, stmts: Sequence[Stmt], *, urgent: bool, keys: Sequence[tuple[str, str]] = ()) -> list[Any]:
        """Queue a unit and wait for its group to commit; its results, or its own error."""
        if self._task is None:
            raise DatabaseUnavailable("the database is closing" if self._closing else "the database is not open")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._normal).append(Unit(stmts, future, keys=keys))
        self._wake.set()
        # shield: a caller that is cancelled must not cancel a unit the writer may already be running.
        return await asyncio.shield(future)

    async def stop(self, timeout: float = 10.0) -> None:
        """Let queued units commit (for up to `timeout`), then stop; what is left fails as unavailable."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        for unit in [*self._urgent, *self._normal]:
            if not unit.future.done():
                unit.future.set_exception(DatabaseUnavailable("the database is closing"))
        self._urgent.clear()
        self._normal.clear()

    def _take_group(self) -> list[Unit]:
        group, self._urgent = self._urgent, []
        group += self._normal[:self._max_units]
        del self._normal[:self._max_units]
        return group

    async def _loop(self) -> None:
        while True:
            if self.idle:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group = self._take_group()
            try:
                await self._run_group(group)
            except Exception as exc:  # the whole group failed
                error = self._translate(exc)
                for unit in group:
                    unit.outcome = error if isinstance(error, DatabaseUnavailable) else DatabaseUnavailable(
                        f"the group commit failed: {error}")
            self.groups += 1
            for unit in group:
                if unit.future.done():
                    continue
                if isinstance(unit.outcome, BaseException):
                    unit.future.set_exception(unit.outcome)
                else:
                    unit.future.set_result(unit.outcome or [])
