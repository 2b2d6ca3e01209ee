"""The settings page's business section: the monthly budget, the price table, opening hours, the window template.

These apply whenever they are set, whatever "Use stored settings" says (that box is about the AI's
configuration); a field left empty falls back to its environment variable.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

from aiohttp import web

from bot.domain.hours import BusinessHours
from bot.persistence.usage import BusinessSettings, Price
from bot.web.keys import COSTS, REPOS, STORED_SETTINGS

_TEMPLATE = re.compile(r"^[a-z0-9_]{1,512}(:[A-Za-z_]{2,8})?$")
_MODEL = re.compile(r"^[A-Za-z0-9._:/-]{1,100}$")


async def context(request: web.Request) -> dict[str, Any]:
    """What the section shows: the saved values, the prices, and the spend so far."""
    repos = request.app[REPOS]
    costs = request.app[COSTS]
    prices = await repos.usage.prices()
    budget = (await request.app[STORED_SETTINGS].current()).monthly_budget
    return {"business": await repos.business.get(), "prices": sorted(prices.values(), key=lambda p: p.model),
            "budget": budget, "spent_month": costs.month, "spent_today": costs.today,
            "budget_reached": costs.over(budget)}


def _number(raw: object, name: str, errors: dict[str, str]) -> float | None:
    text = str(raw or "").strip().replace(",", ".")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        errors[name] = "Write a number such as 50 or 12.5."
        return None
    if not math.isfinite(value) or value < 0:
        errors[name] = "Use a number of 0 or more."
        return None
    return value


def validate_business(form: Any, current: BusinessSettings) -> tuple[BusinessSettings, dict[str, str]]:
    """The form's values, checked: the opening hours must parse in their time zone, the template look like one."""
    errors: dict[str, str] = {}
    budget = _number(form.get("monthly_budget"), "monthly_budget", errors)
    hours = str(form.get("opening_hours") or "").strip() or None
    zone = str(form.get("time_zone") or "").strip() or None
    if hours:
        try:
            BusinessHours.parse(hours, zone or "UTC")
        except ValueError as exc:
            errors["opening_hours"] = str(exc)
    elif zone:
        try:
            BusinessHours.parse("mon 09:00-10:00", zone)
        except ValueError as exc:
            errors["time_zone"] = str(exc)
    template = str(form.get("window_template") or "").strip() or None
    if template and not _TEMPLATE.match(template):
        errors["window_template"] = ("Write the template's name as in WhatsApp Manager, e.g. order_update or "
                                     "order_update:it.")
    name, _, language = (template or "").partition(":")
    return replace(current, monthly_budget=budget, opening_hours=hours, time_zone=zone,
                   ai_outside_hours_only=form.get("ai_outside_hours_only") == "on",
                   window_template=name or None, window_template_language=language or None), errors


def validate_price(form: Any) -> tuple[Price | None, dict[str, str]]:
    """One model's three prices per million tokens, checked."""
    errors: dict[str, str] = {}
    model = str(form.get("model") or "").strip()
    if not _MODEL.match(model):
        errors["model"] = "Write the model's name as you set it, e.g. gpt-4o-mini."
    values = [_number(form.get(f), f, errors) for f in ("input_per_million", "cached_per_million",
                                                        "output_per_million")]
    if any(v is None for v in values) and not errors:
        errors["price"] = "Give all three prices (0 for free)."
    if errors:
        return None, errors
    return Price(model, *(float(v or 0) for v in values)), {}
