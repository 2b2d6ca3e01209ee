"""Outbound events (`message.received`, `reply.sent`, `handoff.requested`, `order.created`, `order.confirmed`).

An event is one statement in the unit of work that commits its cause: it exists if and only if the
cause happened, and the delivery to other systems works from the table, retrying until they answer.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from bot.persistence.database import Stmt

KINDS = ("message.received", "reply.sent", "handoff.requested", "order.created", "order.confirmed")


def event_stmt(kind: str, payload: dict[str, Any], *, now: float | None = None) -> Stmt:
    """Record one event (part of the unit that commits its cause)."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    return Stmt("INSERT INTO events (kind, payload, created_at) VALUES ($1, $2, $3)",
                (kind, orjson.dumps(payload).decode(), now or time.time()))


def received_stmt(payload: dict[str, Any], *, wamid: str, now: float) -> Stmt:
    """`message.received`, only if this unit stored the message (a re-delivery from Meta is no event)."""
    return Stmt(
        "INSERT INTO events (kind, payload, created_at) SELECT 'message.received', $1, $2 "
        "WHERE EXISTS (SELECT 1 FROM inbox WHERE wamid = $3 AND received_at = $2)",
        (orjson.dumps(payload).decode(), now, wamid),
    )


def order_payload(order: Any) -> dict[str, Any]:
    """An order as other systems get it (bot.persistence.crm.Order)."""
    return {
        "order_id": order.id, "code": order.code, "contact_id": order.contact_id, "status": order.status,
        "total_cents": order.total_cents, "currency": order.currency, "notes": order.notes,
        "lines": [{"sku": ln.sku, "name": ln.name, "quantity": ln.quantity, "unit_price_cents": ln.unit_price_cents,
                   "line_total_cents": ln.line_total_cents} for ln in order.lines],
    }
