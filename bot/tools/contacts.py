"""Built-in tool: keep the customer's details in the CRM up to date."""

from __future__ import annotations

import re
from typing import Any

from bot.tools.core import ToolContext, ToolError, tool

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
MAX_NAME = 100
MAX_COMPANY = 100
MAX_NOTES = 1000


def _clean(value: str | None) -> str | None:
    """Blank means 'not given': the model sometimes sends "" for a field it means to leave alone."""
    if value is None:
        return None
    return " ".join(value.split()) or None


@tool
async def update_contact(
    ctx: ToolContext,
    name: str | None = None,
    email: str | None = None,
    company: str | None = None,
    notes: str | None = None,
) -> dict[str, Any]:
    """Save details the customer gave about themselves; fields left null stay as they are.

    Args:
        name: the customer's name as they want to be called.
        email: their email address.
        company: the company they buy for, if any.
        notes: something worth remembering for next time (added to the existing notes).
    """
    name, email, company = _clean(name), _clean(email), _clean(company)
    notes = notes.strip() if notes else None
    problems: list[str] = []
    if name is not None and len(name) > MAX_NAME:
        problems.append(f"name: at most {MAX_NAME} characters")
    if email is not None:
        email = email.lower()
        if len(email) > 254 or not _EMAIL.match(email):
            problems.append(f"email: {email!r} is not a valid email address")
    if company is not None and len(company) > MAX_COMPANY:
        problems.append(f"company: at most {MAX_COMPANY} characters")
    if notes is not None and len(notes) > MAX_NOTES:
        problems.append(f"notes: at most {MAX_NOTES} characters")
    if problems:
        raise ToolError("nothing was saved: " + "; ".join(problems))
    if name is None and email is None and company is None and notes is None:
        raise ToolError("nothing to save: give at least one of name, email, company or notes")
    ctx.actions.contact_changed = True
    contact = await ctx.repos.contacts.update(
        ctx.contact.id, source="tool", name=name, email=email, company=company, notes=notes
    )
    return {
        "saved": True,
        "contact": {"name": contact.name, "email": contact.email, "company": contact.company, "notes": contact.notes},
    }
