"""The cost ledger (tokens per conversation, model and day), the price table, and the business settings row."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

from bot.domain.conversation import ConversationKey
from bot.persistence.database import Database, Record, Stmt, row_to


@dataclass(frozen=True, slots=True)
class Price:
    """What one million tokens of a model cost, in the budget's currency."""

    model: str
    input_per_million: float
    cached_per_million: float
    output_per_million: float

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """The price of one call's tokens (cached input tokens are billed at the cached rate)."""
        fresh = max(0, input_tokens - cached_tokens)
        return (fresh * self.input_per_million + cached_tokens * self.cached_per_million
                + output_tokens * self.output_per_million) / 1_000_000


# OpenAI's list prices in USD per million tokens as published when this was written; operators edit
# them (and add their models) on the settings page. A model with no price counts as free: say so there.
DEFAULT_PRICES: dict[str, Price] = {p.model: p for p in (
    Price("gpt-4o-mini", 0.15, 0.075, 0.60),
    Price("gpt-4o", 2.50, 1.25, 10.00),
    Price("gpt-4.1-mini", 0.40, 0.10, 1.60),
    Price("gpt-4.1", 2.00, 0.50, 8.00),
    Price("gpt-5-mini", 0.25, 0.025, 2.00),
    Price("gpt-5", 1.25, 0.125, 10.00),
)}


def day_of(when: float) -> str:
    """The UTC day a time falls on, as the ledger keys it (YYYY-MM-DD)."""
    return time.strftime("%Y-%m-%d", time.gmtime(when))


def usage_stmt(key: ConversationKey, model: str, *, calls: int, input_tokens: int, cached_tokens: int,
               output_tokens: int, cost: float, now: float) -> Stmt:
    """Add one turn's model use to the ledger (part of the turn's unit)."""
    return Stmt(
        "INSERT INTO usage_ledger (day, phone_number_id, customer_id, model, calls, input_tokens, cached_tokens, "
        "output_tokens, cost) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT (day, phone_number_id, customer_id, model) DO UPDATE SET "
        "calls = usage_ledger.calls + excluded.calls, "
        "input_tokens = usage_ledger.input_tokens + excluded.input_tokens, "
        "cached_tokens = usage_ledger.cached_tokens + excluded.cached_tokens, "
        "output_tokens = usage_ledger.output_tokens + excluded.output_tokens, cost = usage_ledger.cost + excluded.cost",
        (day_of(now), key.business, key.customer, model, calls, input_tokens, cached_tokens, output_tokens,
         float(cost)),
    )


@dataclass(frozen=True, slots=True)
class Spend:
    """Money and tokens over a period."""

    cost: float
    calls: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int


class UsageRepo:
    """Reads of the ledger, and the price table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def spend(self, first_day: str, last_day: str | None = None) -> Spend:
        """The ledger summed from `first_day` (inclusive) to `last_day` (inclusive, or open)."""
        row = await self.db.fetchrow(
            "SELECT COALESCE(SUM(cost), 0) AS cost, COALESCE(SUM(calls), 0) AS calls, "
            "COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(cached_tokens), 0) AS cached_tokens, "
            "COALESCE(SUM(output_tokens), 0) AS output_tokens FROM usage_ledger WHERE day >= $1 AND day <= $2",
            first_day, last_day or "9999-12-31",
        )
        assert row is not None
        return Spend(float(row["cost"]), int(row["calls"]), int(row["input_tokens"]), int(row["cached_tokens"]),
                     int(row["output_tokens"]))

    async def by_model(self, first_day: str) -> list[dict[str, object]]:
        """Spend per model since a day, most expensive first."""
        rows = await self.db.fetch(
            "SELECT model, SUM(cost) AS cost, SUM(calls) AS calls, SUM(input_tokens) AS input_tokens, "
            "SUM(cached_tokens) AS cached_tokens, SUM(output_tokens) AS output_tokens FROM usage_ledger "
            "WHERE day >= $1 GROUP BY model ORDER BY SUM(cost) DESC", first_day,
        )
        # PostgreSQL sums BIGINT columns to NUMERIC (Decimal): plain numbers for JSON and templates.
        return [{"model": r["model"], "cost": float(r["cost"] or 0), "calls": int(r["calls"] or 0),
                 "input_tokens": int(r["input_tokens"] or 0), "cached_tokens": int(r["cached_tokens"] or 0),
                 "output_tokens": int(r["output_tokens"] or 0)} for r in rows]

    async def for_conversation(self, key: ConversationKey, first_day: str) -> Spend:
        """One conversation's spend since a day."""
        row = await self.db.fetchrow(
            "SELECT COALESCE(SUM(cost), 0), COALESCE(SUM(calls), 0), COALESCE(SUM(input_tokens), 0), "
            "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(output_tokens), 0) FROM usage_ledger "
            "WHERE phone_number_id = $1 AND customer_id = $2 AND day >= $3", key.business, key.customer, first_day,
        )
        assert row is not None
        return Spend(float(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))

    async def prices(self) -> dict[str, Price]:
        """The price table: the defaults, overridden and extended by what operators saved."""
        rows = await self.db.fetch("SELECT * FROM model_prices")
        saved = {r["model"]: row_to(Price, r) for r in rows}
        return {**DEFAULT_PRICES, **saved}

    async def set_price(self, price: Price, *, updated_by: str | None) -> None:
        """Save one model's prices."""
        await self.db.execute(
            "INSERT INTO model_prices (model, input_per_million, cached_per_million, output_per_million, updated_at, "
            "updated_by) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (model) DO UPDATE SET "
            "input_per_million = excluded.input_per_million, cached_per_million = excluded.cached_per_million, "
            "output_per_million = excluded.output_per_million, updated_at = excluded.updated_at, "
            "updated_by = excluded.updated_by",
            price.model, price.input_per_million, price.cached_per_million, price.output_per_million, time.time(),
            updated_by,
        )


@dataclass(frozen=True, slots=True)
class BusinessSettings:
    """The settings page's business section; None means "not set here" (the env value applies)."""

    monthly_budget: float | None = None
    opening_hours: str | None = None
    time_zone: str | None = None
    ai_outside_hours_only: bool = False
    window_template: str | None = None
    window_template_language: str | None = None
    updated_at: float | None = None
    updated_by: str | None = None

    @classmethod
    def from_row(cls, row: Record) -> BusinessSettings:
        """Build from the row."""
        return row_to(cls, row)


_BUSINESS = [f.name for f in fields(BusinessSettings) if f.name not in ("updated_at", "updated_by")]


class BusinessSettingsRepo:
    """The single business settings row."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self) -> BusinessSettings:
        """The saved row (all unset when never saved)."""
        row = await self.db.fetchrow("SELECT * FROM business_settings WHERE id = 1")
        return BusinessSettings() if row is None else BusinessSettings.from_row(row)

    async def save(self, settings: BusinessSettings, *, updated_by: str | None) -> None:
        """Replace the row."""
        data = asdict(settings)
        data["ai_outside_hours_only"] = int(bool(data["ai_outside_hours_only"]))
        columns = [*_BUSINESS, "updated_at", "updated_by"]
        values = [data[c] for c in _BUSINESS] + [time.time(), updated_by]
        marks_ = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
        await self.db.execute(
            f"INSERT INTO business_settings (id, {', '.join(columns)}) VALUES (1, {marks_}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}", *values,
        )
