"""Outbound event webhooks: the endpoints other systems gave us, and a durable queue of deliveries.

Events are written by their causes (bot/persistence/events.py), each with a delivery per matching
endpoint (event × endpoint, unique) in the same unit. A delivery worker claims due deliveries with a
compare-and-set on `claimed_until`, so two workers (two processes on one PostgreSQL) never send the
same delivery at once; a claim that runs out (a worker died) is taken over. A delivery is pending until
the endpoint answers 2xx, retried with backoff in between.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from bot.persistence.database import Conflict, Database, Record, Stmt, row_to
from bot.persistence.events import KINDS


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to POST events, and which."""

    id: int
    url: str
    secret_enc: str
    secret_hint: str
    kinds: str
    enabled: bool
    created_at: float
    created_by: str | None

    @classmethod
    def from_row(cls, row: Record) -> Endpoint:
        """Build from a webhook_endpoints row."""
        return row_to(cls, row)

    @property
    def kind_list(self) -> list[str]:
        """The event kinds it receives."""
        return [k for k in self.kinds.split(",") if k]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this worker holds until `until`: what to send, and where."""

    id: int
    attempts: int
    until: float
    created_at: float
    event_id: int
    kind: str
    payload: str
    event_created_at: float
    url: str
    secret_enc: str


class WebhookRepo:
    """Endpoints, the fan-out of events, and deliveries."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- endpoints ------------------------------------------------------------------------------
    async def add_endpoint(self, url: str, secret_enc: str, secret_hint: str, kinds: Sequence[str], *,
                           user: str | None) -> int:
        """Store an endpoint; it gets the events written from now on."""
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise ValueError(f"unknown event kinds: {', '.join(unknown)}" if unknown else "choose at least one event")
        now = time.time()
        latest = await self.db.fetchval("SELECT COALESCE(MAX(id), 0) FROM events")
        endpoint_id = await self.db.insert(
            "INSERT INTO webhook_endpoints (url, secret_enc, secret_hint, kinds, enabled, from_event_id, created_at, "
            "created_by, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $6) RETURNING id",
            url, secret_enc, secret_hint, ",".join(k for k in KINDS if k in kinds), int(latest or 0), now, user)
        return int(endpoint_id)

    async def endpoints(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""
        rows = await self.db.fetch("SELECT * FROM webhook_endpoints ORDER BY id")
        return [Endpoint.from_row(r) for r in rows]

    async def set_enabled(self, endpoint_id: int, enabled: bool) -> bool:
        """Switch an endpoint on or off (while off, its events are not queued); False when unknown."""
        return bool(await self.db.execute(
            "UPDATE webhook_endpoints SET enabled = $1, updated_at = $2 WHERE id = $3",
            int(enabled), time.time(), endpoint_id))

    async def delete_endpoint(self, endpoint_id: int) -> bool:
        """Remove an endpoint and its queue; False when unknown."""
        results = await self.db.write([
            Stmt("DELETE FROM webhook_deliveries WHERE endpoint_id = $1", (endpoint_id,)),
            Stmt("DELETE FROM webhook_endpoints WHERE id = $1", (endpoint_id,)),
        ])
        return bool(results[1])

    async def stats(self) -> dict[int, dict[str, object]]:
        """Per endpoint: deliveries pending, failed for good, delivered, and the last attempt."""
        rows = await self.db.fetch(
            "SELECT endpoint_id, SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending, "
            "SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed, "
            "SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END) AS delivered, "
            "MAX(last_attempt_at) AS last_attempt_at FROM webhook_deliveries GROUP BY endpoint_id")
        return {int(r["endpoint_id"]): {"pending": int(r["pending"] or 0), "failed": int(r["failed"] or 0),
                                        "delivered": int(r["delivered"] or 0), "last_attempt_at": r["last_attempt_at"]}
                for r in rows}

    async def recent_failures(self, limit: int = 10) -> list[Record]:
        """The latest attempts that did not get a 2xx (pending retries and given-up deliveries)."""
        return await self.db.fetch(
            "SELECT d.id, d.endpoint_id, e.url, ev.kind, d.event_id, d.status, d.attempts, d.last_status, "
            "d.last_error, d.last_attempt_at, d.next_attempt_at FROM webhook_deliveries d "
            "JOIN webhook_endpoints e ON e.id = d.endpoint_id JOIN events ev ON ev.id = d.event_id "
            "WHERE d.status <> 'delivered' AND d.attempts > 0 ORDER BY d.last_attempt_at DESC LIMIT $1", limit)

    async def deliveries(self, event_id: int | None = None) -> list[Record]:
        """Deliveries (of one event), oldest first: for tests and diagnostics."""
        return await self.db.fetch(
            "SELECT * FROM webhook_deliveries WHERE (CAST($1 AS BIGINT) IS NULL OR event_id = $1) ORDER BY id",
            event_id)

    # -- the queue --------------------------------------------------------------------------------
    async def due(self, *, now: float, limit: int) -> list[int]:
        """Ids of deliveries that may be attempted now (to enabled endpoints, not held by a worker)."""
        rows = await self.db.fetch(
            "SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
            "WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND d.claimed_until < $1 AND e.enabled = 1 "
            "ORDER BY d.next_attempt_at, d.id LIMIT $2", now, limit)
        return [int(r[0]) for r in rows]

    async def next_due_at(self) -> float | None:
        """When the next pending delivery to an enabled endpoint is due (None: none)."""
        # Deliveries to switched-off endpoints wait for nothing: counting them would wake the worker at once.
        value = await self.db.fetchval(
            "SELECT MIN(CASE WHEN d.claimed_until > d.next_attempt_at THEN d.claimed_until ELSE d.next_attempt_at END) "
            "FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
            "WHERE d.status = 'pending' AND e.enabled = 1")
        return None if value is None else float(value)

    async def claim(self, delivery_id: int, *, now: float, lease: float) -> Claimed | None:
        """Hold a delivery for `lease` seconds (compare-and-set); None when another worker holds or did it."""
        until = now + lease
        try:
            await self.db.write([Stmt(
                "UPDATE webhook_deliveries SET claimed_until = $2, attempts = attempts + 1, last_attempt_at = $3 "
                "WHERE id = $1 AND claimed_until < $3 AND status = 'pending'", (delivery_id, until, now), expect=1)])
        except Conflict:
            return None
        row = await self.db.fetchrow(
            "SELECT d.id, d.attempts, d.created_at, ev.id AS event_id, ev.kind, ev.payload, "
            "ev.created_at AS event_created_at, e.url, e.secret_enc FROM webhook_deliveries d "
            "JOIN events ev ON ev.id = d.event_id JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = $1",
            delivery_id)
        if row is None:  # the endpoint was deleted meanwhile
            return None
        return Claimed(id=row["id"], attempts=row["attempts"], until=until, created_at=row["created_at"],
                       event_id=row["event_id"], kind=row["kind"], payload=row["payload"],
                       event_created_at=row["event_created_at"], url=row["url"], secret_enc=row["secret_enc"])

    async def delivered(self, claim: Claimed, status: int, *, now: float) -> None:
        """The endpoint answered 2xx: done for good."""
        await self.db.execute(
            "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = $2, last_status = $3, "
            "last_error = NULL, claimed_until = 0 WHERE id = $1 AND status = 'pending'", claim.id, now, status)

    async def failed(self, claim: Claimed, status: int | None, error: str, *, retry_at: float | None) -> None:
        """The attempt failed: try again at `retry_at`, or (None) give up for good."""
        await self.db.execute(
            "UPDATE webhook_deliveries SET status = $2, next_attempt_at = $3, last_status = $4, last_error = $5, "
            "claimed_until = 0 WHERE id = $1 AND status = 'pending'",
            claim.id, "pending" if retry_at is not None else "failed",
            retry_at if retry_at is not None else claim.until, status, error[:500])

    async def prune(self, *, before: float) -> int:
        """Forget deliveries that ended (delivered or given up) before a time."""
        return await self.db.execute(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND last_attempt_at < $1", before)
