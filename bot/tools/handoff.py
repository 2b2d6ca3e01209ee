"""Built-in tool: pass the conversation to a person of the team."""

from __future__ import annotations

from typing import Any

import structlog

from bot.ai.privacy import mask_numbers
from bot.texts import text as fixed_text
from bot.tools.core import ToolContext, ToolError, tool

log = structlog.get_logger("bot.tools")


@tool
async def request_human(ctx: ToolContext, reason: str) -> dict[str, Any]:
    """Hand the conversation to a person of our team, when the customer asks for one or you cannot help.

    The customer is told in their language that a person will answer; after this, say nothing more.

    Args:
        reason: why a person is needed, in a few words (shown to the team).
    """
    repos = ctx.repos
    conv = await repos.conversations.get(*ctx.conversation_key)
    if conv is None:
        raise ToolError("this conversation is not stored, so it cannot be handed over")
    # Queue the customer's notice before pausing: the turn drops the model's draft once it sees the
    # pause, and sends only what the server queued, i.e. this text.
    await repos.outbox.enqueue(
        *ctx.conversation_key, author="system", parts=[fixed_text("handoff", ctx.language)], reply_to_inbox_id=None
    )
    if ctx.handoff is not None:
        await ctx.handoff.hand_off(conv)
    else:
        await repos.conversations.pause(conv.id, until=None, needs_human=True)
    log.info("handoff_by_model", reason=mask_numbers(reason[:200]))
    return {"handed_over": True, "note": "A person will answer; the customer has been told. Add nothing."}
