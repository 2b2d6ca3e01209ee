"""Outbound events (`message.received`, `reply.sent`, `handoff.requested`, `order.created`, `order.confirmed`).

An event is one statement in the unit of work that commits its cause: it exists if and only if the
cause happened, and the delivery to other systems works from the table, retrying until they answer.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from bot.persistence.database import Stmt, marks, sized_chunks


def _token() -> str:
    """A unique token that sorts by time: its unique index grows at one end, not at a random page a row
    (a random token dirtied a page of that index per message in every commit, and the WAL with it)."""
    return f"{time.time_ns():016x}{secrets.token_hex(4)}"


KINDS = ("message.received", "reply.sent", "handoff.requested", "order.created", "order.confirmed")


# The deliveries of an event to every enabled endpoint that wants it, made in the same unit as the
# event: the event is found again by its token (ids are not known before the insert, and may commit
# out of order on PostgreSQL). The EXISTS is evaluated once: with no endpoint enabled (the usual
# case), the events are not even looked up.
_FAN_OUT = (
    "INSERT INTO webhook_deliveries (event_id, endpoint_id, status, attempts, next_attempt_at, claimed_until, "
    "created_at) SELECT ev.id, e.id, 'pending', 0, $1, 0, $1 FROM events ev JOIN webhook_endpoints e "
    "ON e.enabled = 1 AND ev.id > e.from_event_id AND (',' || e.kinds || ',') LIKE ('%,' || ev.kind || ',%') "
    "WHERE ev.token IN ({tokens}) AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled = 1) "
    "ON CONFLICT (event_id, endpoint_id) DO NOTHING"
)


def event_stmts(kind: str, payload: dict[str, Any], *, now: float | None = None) -> list[Stmt]:
    """Record one event and queue its deliveries (part of the unit that commits its cause)."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    now = now or time.time()
    token = _token()
    return [Stmt("INSERT INTO events (kind, payload, created_at, token) VALUES ($1, $2, $3, $4)",
                 (kind, orjson.dumps(payload).decode(), now, token)),
            Stmt(_FAN_OUT.format(tokens="$2"), (now, token))]


def received_stmts(received: list[tuple[str, dict[str, Any]]], *, now: float) -> list[Stmt]:
    """`message.received` for messages (wamid, payload) of one unit: two statements a chunk, not two a message.

    An event is recorded only for a message this unit stored (its `received_at` is this unit's `now`):
    a re-delivery from Meta is no event. The caller passes each wamid once, so a wamid Meta delivered
    twice within the same unit makes one event.
    """
    stmts: list[Stmt] = []
    for chunk in sized_chunks(received):
        params: list[Any] = [now]
        tokens: list[str] = []
        for wamid, payload in chunk:
            token = _token()
            tokens.append(token)
            params += (orjson.dumps(payload).decode(), token, wamid)
        rows = ", ".join(f"(CAST(${2 + i * 3} AS TEXT), CAST(${3 + i * 3} AS TEXT), CAST(${4 + i * 3} AS TEXT))"
                         for i in range(len(chunk)))
        stmts.append(Stmt(
            "INSERT INTO events (kind, payload, created_at, token) SELECT 'message.received', v.column1, $1, "
            f"v.column2 FROM (VALUES {rows}) AS v "
            "WHERE EXISTS (SELECT 1 FROM inbox WHERE wamid = v.column3 AND received_at = $1)", tuple(params)))
        stmts.append(Stmt(_FAN_OUT.format(tokens=marks(len(tokens), 2)), (now, *tokens)))
    return stmts



def order_payload(order: Any) -> dict[str, Any]:
    """An order as other systems get it (bot.persistence.crm.Order)."""
    return {
        "order_id": order.id, "code": order.code, "contact_id": order.contact_id, "status": order.status,
        "total_cents": order.total_cents, "currency": order.currency, "notes": order.notes,
        "lines": [{"sku": ln.sku, "name": ln.name, "quantity": ln.quantity, "unit_price_cents": ln.unit_price_cents,
                   "line_total_cents": ln.line_total_cents} for ln in order.lines],
    }
