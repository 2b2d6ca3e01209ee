"""Built-in tool: search the product catalogue."""

from __future__ import annotations

from typing import Any

from bot.tools.core import ToolContext, ToolError, tool
from bot.tools.money import format_price

DEFAULT_LIMIT = 5
MAX_LIMIT = 20


@tool
async def search_products(ctx: ToolContext, query: str, limit: int | None = None) -> dict[str, Any]:
    """Search the shop's catalogue by product name, description or code (accents and case do not matter).

    Use it before quoting a price or stock, and to find the sku that create_order needs.

    Args:
        query: the words the customer used, e.g. "pane integrale" or "borsa rossa"; partial words work.
        limit: how many products to return at most (default 5, at most 20).
    """
    if not query.strip():
        raise ToolError("write a few words to look for, e.g. a product name")
    count = max(1, min(MAX_LIMIT, limit or DEFAULT_LIMIT))
    found = await ctx.repos.products.search(query, limit=count)
    products = [
        {
            "sku": p.sku,
            "name": p.name,
            "description": p.description[:300],
            "price": format_price(p.price_cents, p.currency, ctx.language),
            "stock": p.stock,
            "available": p.stock > 0,
        }
        for p in found
    ]
    result: dict[str, Any] = {"query": query, "products": products}
    if not products:
        result["note"] = "No product matches. Ask the customer for other words, or say we do not sell it."
    return result
