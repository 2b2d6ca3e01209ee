"""The orders page (/orders, signed-in users) and its JSON twin: orders by status and date, with their lines;
confirm or cancel one as an operator.

An operator's confirmation has the customer's effects: the stock is checked and taken, the confirmation
links are spent, and the customer gets the same WhatsApp text, queued in the same transaction and sent by
the conversation's actor. Who confirmed or cancelled is written to the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import structlog
from aiohttp import web

from bot.actors.takeover import Takeover
from bot.persistence.crm import Confirmation, Contact, Order, contact_key
from bot.texts import text as fixed_text
from bot.tools.money import format_price
from bot.web.auth import audit_fields
from bot.web.desk.dates import day_range
from bot.web.jsonapi import ok, page_params, refuse, stop
from bot.web.keys import REPOS, TAKEOVER
from bot.web.pages import render

log = structlog.get_logger("bot.web.desk.orders")

routes = web.RouteTableDef()

STATUSES = ("draft", "confirmed", "cancelled")
PAGE_SIZE = 50
# What an operator is told when a confirmation could not be made.
REFUSALS = {
    "unknown": (404, "There is no such order."),
    "already_confirmed": (409, "This order is already confirmed."),
    "cancelled": (409, "This order was cancelled; it cannot be confirmed any more."),
    "unavailable": (409, "Not enough stock for: {items}. Change the stock or the order, then confirm again."),
}


def order_json(order: Order, contact: Contact | None) -> dict[str, Any]:
    """An order as the desk shows it, with its lines and the customer."""
    language = contact.language if contact else None
    return {
        "id": order.id, "code": order.code, "status": order.status, "total_cents": order.total_cents,
        "currency": order.currency, "total": format_price(order.total_cents, order.currency, language),
        "notes": order.notes, "created_at": order.created_at, "confirmed_at": order.confirmed_at,
        "customer": None if contact is None else {"name": contact.name, "wa_id": contact.wa_id,
                                                  "customer_id": contact.customer_id,
                                                  "phone_number_id": contact.phone_number_id},
        "lines": [{"sku": ln.sku, "name": ln.name, "quantity": ln.quantity, "unit_price_cents": ln.unit_price_cents,
                   "line_total_cents": ln.line_total_cents,
                   "line_total": format_price(ln.line_total_cents, order.currency, language)} for ln in order.lines],
    }


def _filters(query: Mapping[str, str]) -> tuple[str | None, float | None, float | None]:
    status = query.get("status", "") or None
    if status is not None and status not in STATUSES:
        stop(400, f"status is one of {', '.join(STATUSES)} (or leave it out for all)")
    since, until = day_range(query.get("from"), query.get("to"))
    return status, since, until


def _order_id(request: web.Request) -> int:
    return int(request.match_info["order_id"])


async def confirm_as_operator(request: web.Request, order_id: int) -> Confirmation:
    """Confirm an order and queue the customer's confirmation text in the same transaction; then wake the actor."""
    repos = request.app[REPOS]
    contact = None
    async with repos.db.transaction() as tx:
        result = await repos.orders.confirm_order(order_id, now=time.time())
        if result.state == "confirmed" and result.order is not None:
            contact = await repos.contacts.get(result.order.contact_id)
            if contact is not None:
                message = fixed_text("order_confirmed", contact.language, order=result.order.code,
                                     total=format_price(result.order.total_cents, result.order.currency,
                                                        contact.language))
                await Takeover.queue_system_text(tx, contact_key(contact), message)
    if result.state == "confirmed" and result.order is not None:
        await repos.audit.record("order_confirmed_by_operator", detail=result.order.code, **audit_fields(request))
        log.info("order_confirmed", order=result.order.code, by="operator")
        if contact is not None:
            request.app[TAKEOVER].wake(contact_key(contact))
    return result


async def cancel_as_operator(request: web.Request, order_id: int) -> Order | None:
    """Cancel an order (a confirmed one gives its stock back), recorded in the audit log."""
    repos = request.app[REPOS]
    before = await repos.orders.get(order_id)
    order = await repos.orders.cancel(order_id, now=time.time())
    if order is not None and before is not None and before.status != "cancelled":
        await repos.audit.record("order_cancelled_by_operator", detail=f"{order.code} (was {before.status})",
                                 **audit_fields(request))
    return order


def _refusal(result: Confirmation) -> tuple[int, str]:
    status, message = REFUSALS[result.state]
    return status, message.format(items=", ".join(result.unavailable))


# -- the page -------------------------------------------------------------------------------------

NOTICES = {"confirmed": "Order confirmed: the stock was taken and the customer was told on WhatsApp.",
           "cancelled": "Order cancelled."}
_KEPT = ("status", "from", "to", "page")


async def _page(request: web.Request, query: Mapping[str, str], *, status: int = 200,
                error: str | None = None) -> web.Response:
    try:
        state, since, until = _filters(query)
    except web.HTTPBadRequest as exc:  # a date typed by hand: say so on the page, show every order
        state, since, until = None, None, None
        error, status = error or orjson.loads(exc.text or "{}").get("error"), 400
    try:
        page = max(0, min(10**6, int(query.get("page", "0"))))
    except ValueError:
        page = 0
    found = await request.app[REPOS].orders.page(status=state, since=since, until=until, limit=PAGE_SIZE + 1,
                                                 offset=page * PAGE_SIZE)
    keep = {k: query[k] for k in ("status", "from", "to") if query.get(k)}
    return render(
        request, "orders.html", status=status,
        orders=[order_json(o, c) for o, c in found[:PAGE_SIZE]],
        filters={"status": state or "", "from": query.get("from", ""), "to": query.get("to", "")},
        statuses=STATUSES, page=page, more=len(found) > PAGE_SIZE, query=urlencode(keep),
        back=urlencode({k: query[k] for k in _KEPT if query.get(k)}),
        notice=NOTICES.get(query.get("done", "")), error=error,
    )


@routes.get("/orders")
async def orders_page(request: web.Request) -> web.Response:
    """Orders newest first, filtered by status and date, each with its lines and Confirm / Cancel."""
    return await _page(request, request.query)


async def _back(request: web.Request) -> dict[str, str]:
    """The filters the page was showing when its button was pressed (the form's `back` field)."""
    form = await request.post()
    pairs = parse_qsl(str(form.get("back", "")))
    return {k: v for k, v in pairs if k in _KEPT}


@routes.post("/orders/{order_id:\\d{1,18}}/confirm")
async def confirm_form(request: web.Request) -> web.Response:
    """The page's Confirm button."""
    back = await _back(request)
    result = await confirm_as_operator(request, _order_id(request))
    if result.state != "confirmed":
        status, message = _refusal(result)
        return await _page(request, back, status=status, error=message)
    raise web.HTTPSeeOther("/orders?" + urlencode({**back, "done": "confirmed"}))


@routes.post("/orders/{order_id:\\d{1,18}}/cancel")
async def cancel_form(request: web.Request) -> web.Response:
    """The page's Cancel button."""
    back = await _back(request)
    if await cancel_as_operator(request, _order_id(request)) is None:
        return await _page(request, back, status=404, error="There is no such order.")
    raise web.HTTPSeeOther("/orders?" + urlencode({**back, "done": "cancelled"}))


# -- JSON -----------------------------------------------------------------------------------------


@routes.get("/api/orders")
async def orders_api(request: web.Request) -> web.Response:
    """Orders newest first: ?status=draft|confirmed|cancelled, ?from= and ?to= (dates), ?limit, ?offset."""
    status, since, until = _filters(request.query)
    limit, offset = page_params(request)
    found = await request.app[REPOS].orders.page(status=status, since=since, until=until, limit=limit, offset=offset)
    return ok({"orders": [order_json(o, c) for o, c in found], "limit": limit, "offset": offset})


@routes.post("/api/orders/{order_id:\\d{1,18}}/confirm")
async def confirm_api(request: web.Request) -> web.Response:
    """Confirm a draft as an operator: stock taken, the customer told on WhatsApp (409 when it cannot be)."""
    result = await confirm_as_operator(request, _order_id(request))
    if result.state != "confirmed" or result.order is None:
        status, message = _refusal(result)
        return refuse(status, message, state=result.state)
    contact = await request.app[REPOS].contacts.get(result.order.contact_id)
    return ok(order_json(result.order, contact))


@routes.post("/api/orders/{order_id:\\d{1,18}}/cancel")
async def cancel_api(request: web.Request) -> web.Response:
    """Cancel an order (a confirmed one gives its stock back)."""
    order = await cancel_as_operator(request, _order_id(request))
    if order is None:
        return refuse(404, "There is no such order.")
    contact = await request.app[REPOS].contacts.get(order.contact_id)
    return ok(order_json(order, contact))
