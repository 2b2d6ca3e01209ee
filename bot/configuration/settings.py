"""Run-time settings: what a turn runs with, from env now and from the settings page when stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.ai.engine import AISettings
from bot.configuration.config import Config
from bot.domain.hours import BusinessHours

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
    customer_turns_per_hour: int = 60  # 0: no limit
    loop_reply_seconds: float = 2.0  # 0: fast replies never count as another bot
    monthly_budget: float | None = None
    hours: BusinessHours | None = None
    ai_outside_hours_only: bool = False
    window_template: tuple[str, str] | None = None  # (name, language) for the server's texts after 24 h


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
        customer_turns_per_hour=config.customer_turns_per_hour,
        loop_reply_seconds=config.loop_reply_seconds,
        monthly_budget=config.monthly_budget,
        hours=BusinessHours.parse(config.opening_hours, config.time_zone) if config.opening_hours else None,
        ai_outside_hours_only=config.ai_outside_hours_only,
        window_template=parse_template_choice(config.window_template),
    )


def parse_template_choice(value: str | None, language: str | None = None) -> tuple[str, str] | None:
    """"name" or "name:language" (English when not given) → (name, language); None when empty."""
    if not value or not value.strip():
        return None
    name, _, lang = value.strip().partition(":")
    return name.strip(), (language or lang.strip() or "en")
