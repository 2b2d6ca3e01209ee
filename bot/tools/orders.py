"""Built-in tools: draft an order, and send the customer a link to confirm it."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Any

from pydantic import Field
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from bot.persistence.crm import MAX_QUANTITY, Order, OrderRejected
from bot.tools.core import ToolContext, ToolError, tool
from bot.tools.money import format_price

CONFIRMATION_HOURS = 24


class OrderItem(TypedDict):
    """One product line of an order."""

    sku: Annotated[str, Field(description="the product code (sku) from search_products")]
    quantity: Annotated[int, Field(description=f"how many, from 1 to {MAX_QUANTITY}")]


def token_hash(token: str) -> str:
    """The only form in which a confirmation token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def order_summary(order: Order, language: str | None) -> dict[str, Any]:
    """An order as the model sees it: code, lines and total with prices formatted for the customer."""
    return {
        "order_id": order.id,
        "code": order.code,
        "status": order.status,
        "lines": [
            {
                "sku": line.sku,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": format_price(line.unit_price_cents, order.currency, language),
                "line_total": format_price(line.line_total_cents, order.currency, language),
            }
            for line in order.lines
        ],
        "total": format_price(order.total_cents, order.currency, language),
        "notes": order.notes,
    }


@tool
async def create_order(ctx: ToolContext, items: list[OrderItem], notes: str | None = None) -> dict[str, Any]:
    """Create a draft order for this customer; prices and the total are taken from the catalogue.

    The order is only a draft: afterwards call generate_order_confirmation_form and send the customer
    the link, where they check the order and confirm it.

    Args:
        items: the products and quantities; repeat a sku only once.
        notes: anything the customer asked for about the order (delivery, gift wrap…), or null.
    """
    cleaned = (notes or "").strip()[:1000] or None
    try:
        order = await ctx.repos.orders.create_draft(
            ctx.contact.id, [(item["sku"], item["quantity"]) for item in items], notes=cleaned
        )
    except OrderRejected as exc:
        raise ToolError("the order was not created: " + "; ".join(exc.problems)) from None
    summary = order_summary(order, ctx.language)
    summary["next_step"] = (
        "Tell the customer the lines and total, then call generate_order_confirmation_form with this order_id "
        "and send them the link to confirm."
    )
    return summary


@tool
async def generate_order_confirmation_form(ctx: ToolContext, order_id: int) -> dict[str, Any]:
    """Make a one-time link (valid 24 hours) where the customer reviews a draft order and confirms it.

    Args:
        order_id: the order_id that create_order returned.
    """
    order = await ctx.repos.orders.get(order_id)
    if order is None or order.contact_id != ctx.contact.id:
        raise ToolError(f"this customer has no order with order_id {order_id}")
    if order.status == "confirmed":
        raise ToolError(f"order {order.code} is already confirmed: no link is needed")
    if order.status != "draft":
        raise ToolError(f"order {order.code} was cancelled: create a new order instead")
    token = secrets.token_urlsafe(32)
    now = ctx.clock()
    await ctx.repos.orders.add_confirmation(
        order.id, token_hash(token), now=now, expires_at=now + CONFIRMATION_HOURS * 3600
    )
    return {
        "url": f"{ctx.config.public_url.rstrip('/')}/orders/confirm/{token}",
        "code": order.code,
        "total": format_price(order.total_cents, order.currency, ctx.language),
        "expires_in_hours": CONFIRMATION_HOURS,
        "next_step": "Send the customer this link exactly as it is; they confirm the order there.",
    }
