"""Built-in tool: offer the customer choices to tap (reply buttons or a list) instead of typing."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from pydantic import Field
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from bot.domain.choices import to_choices
from bot.tools.core import ToolContext, ToolError, tool


class ChoiceItem(TypedDict):
    """One option the customer can pick."""

    id: Annotated[str, Field(description="a short code for this option, sent back when the customer picks it")]
    title: Annotated[str, Field(description="what the customer sees: at most 20 characters for buttons, 24 for a list")]
    description: Annotated[str | None, Field(description="a line under the title in a list, or null")]


@tool
async def offer_choices(ctx: ToolContext, text: str, choices: list[ChoiceItem]) -> dict[str, Any]:
    """Send the customer a question with options to tap, instead of a plain text answer.

    Up to 3 short options become reply buttons, up to 10 a list; more become a numbered list the
    customer answers with a number. Their pick comes back as "the customer chose <title> (<id>)".
    After calling this, end your turn: the question is your answer.

    Args:
        text: the question or message the options belong to, in the customer's language.
        choices: the options, each with an id, a title and an optional description.
    """
    try:
        items = to_choices(list(choices))
    except ValueError as exc:
        raise ToolError(f"the choices were not sent: {exc}") from None
    if not text.strip():
        raise ToolError("the choices were not sent: write the question in `text`")
    ctx.actions.choices = {"text": text.strip(), "choices": [asdict(c) for c in items]}
    return {"offered": True, "choices": len(items),
            "note": "The customer sees this question with its options. Write nothing more this turn."}
