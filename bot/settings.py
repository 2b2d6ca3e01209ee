"""Run-time settings: what a turn runs with, from env now and from the settings page when stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.ai.engine import AISettings
from bot.config import Config

LOCAL_KB_TOOL = "search_knowledge_base"


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """The orchestration and AI settings in force for the next turn."""

    ai: AISettings
    autoreply: bool
    reaction: bool
    reaction_emoji: str
    human_cooldown_seconds: int
    burst_window_ms: int
    handoff_keywords: tuple[str, ...]


class SettingsSource(Protocol):
    """Where a turn gets its settings (read each turn, so changes apply with no restart)."""

    async def current(self) -> RuntimeSettings:
        """The settings for the next turn."""
        ...


def settings_from_config(config: Config) -> RuntimeSettings:
    """The env/CLI settings."""
    return RuntimeSettings(
        ai=AISettings(
            api_key=config.openai_api_key,
            base_url=config.openai_base_url,
            model=config.model,
            instructions=config.instructions,
            client_name=config.client_name,
            # Without a stored, ready local knowledge base there is nothing for this tool to search.
            hidden_tools=frozenset({LOCAL_KB_TOOL}),
        ),
        autoreply=config.autoreply,
        reaction=config.reaction,
        reaction_emoji=config.reaction_emoji,
        human_cooldown_seconds=config.human_cooldown_seconds,
        burst_window_ms=config.burst_window_ms,
        handoff_keywords=config.handoff_keywords,
    )
