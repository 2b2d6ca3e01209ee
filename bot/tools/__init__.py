"""Tools the model may call: the `@tool` decorator, discovery, strict schemas, and the built-in CRM tools.

Write a tool as `async def name(ctx: ToolContext, ...)` with type hints and a Google-style docstring,
decorate it with `@tool`, and put its module in a directory listed in BOT_TOOLS_PATH (or publish it
under the `bot.tools` entry-point group). Every module of this package is a built-in tool module.
"""

from __future__ import annotations

from bot.tools.core import Tool, ToolContext, ToolError, TurnActions, tool
from bot.tools.registry import LoadError, ToolRegistry, discover, load_tools
from bot.tools.schema import ToolConfigError

__all__ = [
    "LoadError",
    "Tool",
    "ToolConfigError",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "TurnActions",
    "discover",
    "load_tools",
    "tool",
]
