"""The send rate per business number, shared by every process: one token bucket per number in a table.

Each process leases a few tokens at a time (one statement per lease, not per message), so the
table sees `rate / batch` updates a second whatever the number of processes. A lease that leaves the
bucket in debt waits for the debt to refill: reservations, as TokenBucket in the Graph client does.
The clock is PostgreSQL's, so processes on machines whose clocks disagree still share one rate.
"""

from __future__ import annotations

import asyncio

from bot.persistence.postgres import PostgresDatabase

_LEASE = (
    "INSERT INTO send_buckets (phone_number_id, tokens, updated_at) "
    "VALUES ($1, $2::float8 - $3::float8, extract(epoch from clock_timestamp())) "
    "ON CONFLICT (phone_number_id) DO UPDATE SET "
    "tokens = LEAST($2::float8, send_buckets.tokens + (extract(epoch from clock_timestamp()) - send_buckets.updated_at)"
    " * $4::float8) - $3::float8, updated_at = extract(epoch from clock_timestamp()) RETURNING tokens"
)


class SharedRate:
    """`take(phone_number_id)` waits until this process may send one more message from that number."""

    def __init__(self, db: PostgresDatabase, rate: float) -> None:
        self._db = db
        self._rate = rate
        self._batch = max(1, int(rate // 50))
        self._credit: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def take(self, phone_number_id: str) -> None:
        """One send's token (FIFO per number within this process)."""
        lock = self._locks.setdefault(phone_number_id, asyncio.Lock())
        async with lock:
            if self._credit.get(phone_number_id, 0) > 0:
                self._credit[phone_number_id] -= 1
                return
            # Committed alone, never in a group: the bucket's row lock lasts one statement.
            rows = await self._db.fetch_alone(_LEASE, phone_number_id, float(self._rate), self._batch,
                                              float(self._rate))
            left = float(rows[0][0])
            self._credit[phone_number_id] = self._batch - 1
            if left < 0:
                await asyncio.sleep(-left / self._rate)
