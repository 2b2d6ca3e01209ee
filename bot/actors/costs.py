"""What the model costs: prices, today's and this month's spend, and the monthly budget's verdict.

Every turn's tokens go into the ledger with the turn's own write (bot/persistence/usage.py); this
keeps running totals in memory so a turn can ask "is the budget reached?" without a query, and
re-reads the ledger every `refresh_seconds`, so spend by other server processes counts too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from bot.ai.engine import Usage
from bot.persistence.usage import DEFAULT_PRICES, Price, UsageRepo, day_of

log = structlog.get_logger("bot.costs")


def month_of(when: float) -> str:
    """The first UTC day of `when`'s month, as the ledger keys days."""
    return day_of(when)[:8] + "01"


class Costs:
    """Prices and running spend totals (UTC days and months)."""

    def __init__(self, usage: UsageRepo, *, refresh_seconds: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._usage = usage
        self._refresh = refresh_seconds
        self._clock = clock
        self.prices: dict[str, Price] = dict(DEFAULT_PRICES)
        self.today = 0.0
        self.month = 0.0
        self._day = day_of(clock())
        self._month = month_of(clock())

    async def refresh(self) -> None:
        """Read the prices and the totals from the database."""
        now = self._clock()
        self.prices = await self._usage.prices()
        day, month = day_of(now), month_of(now)
        today, this_month = await asyncio.gather(self._usage.spend(day), self._usage.spend(month))
        self._day, self._month = day, month
        self.today, self.month = today.cost, this_month.cost

    async def run(self) -> None:
        """Refresh forever (the task is owned by the app's costs context)."""
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.refresh()
            except Exception as exc:  # the database is away for a moment: keep the totals we have
                log.warning("costs_refresh_failed", error=str(exc))

    def price(self, model: str) -> Price | None:
        """The model's price, or of the model it is a dated snapshot of (gpt-4o-mini-2024-07-18 → gpt-4o-mini)."""
        found = self.prices.get(model)
        if found is None:
            matches = [m for m in self.prices if model.startswith(m + "-")]
            found = self.prices[max(matches, key=len)] if matches else None
        return found

    def cost(self, model: str, usage: Usage) -> float:
        """What a turn's tokens cost (0 for a model without a price)."""
        price = self.price(model)
        if price is None:
            return 0.0
        return price.cost(usage.input_tokens, usage.cached_tokens, usage.output_tokens)

    def add(self, cost: float) -> None:
        """Count a turn's cost now (the ledger row is written with the turn)."""
        now = self._clock()
        if day_of(now) != self._day:
            self._day, self.today = day_of(now), 0.0
        if month_of(now) != self._month:
            self._month, self.month = month_of(now), 0.0
        self.today += cost
        self.month += cost

    def over(self, budget: float | None) -> bool:
        """True when this month's spend has reached the budget (None: no budget)."""
        if budget is None:
            return False
        if month_of(self._clock()) != self._month:
            return False  # a new month began since the last count
        return self.month >= budget
