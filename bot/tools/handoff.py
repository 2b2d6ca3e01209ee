"""Built-in tool: pass the conversation to a person of the team."""

from __future__ import annotations

from typing import Any

import structlog

from bot.ai.privacy import mask_numbers
from bot.tools.core import ToolContext, tool

log = structlog.get_logger("bot.tools")


@tool
async def request_human(ctx: ToolContext, reason: str) -> dict[str, Any]:
    """Hand the conversation to a person of our team, when the customer asks for one or you cannot help.

    The customer is told in their language that a person will answer; after this, say nothing more.

    Args:
        reason: why a person is needed, in a few words (shown to the team).
    """
    # The turn drops the model's draft, sends the hand-off text in the customer's language, pauses
    # the AI and flags the conversation for operators, all in its own write.
    ctx.actions.hand_off(reason[:200])
    log.info("handoff_by_model", reason=mask_numbers(reason[:200]))
    return {"handed_over": True, "note": "A person will answer; the customer has been told. Add nothing."}
