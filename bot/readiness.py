"""Is the server set up to do its job? Settings without which part of it cannot work, each said in words:
what does not work, and how to fix it. Logged at start-up and shown on /ai-diagnostics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.configuration.config import Config
from bot.configuration.stored_settings import StoredSettings


@dataclass(slots=True)
class Lifecycle:
    """Is this process taking work? Read by /healthz; `shutdown` asks the process to stop (set by `serve`)."""

    draining: bool = False
    shutdown: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True, slots=True)
class Problem:
    """One missing setting: which, what does not work without it, and what to do."""

    setting: str
    effect: str
    fix: str


def problems(config: Config, *, key_in_use: bool, key_saved_unused: bool) -> list[Problem]:
    """What is missing.

    `key_in_use`: turns have an OpenAI key (env, or stored and ticked); `key_saved_unused`: one is stored, unticked.
    """
    found: list[Problem] = []
    # A local OpenAI-compatible server (OPENAI_BASE_URL) may need no key at all.
    if not key_in_use and not config.openai_base_url:
        if key_saved_unused:
            found.append(Problem(
                "OPENAI_API_KEY",
                "The AI cannot answer customers: no OpenAI key is in use. A key is saved on the settings page, "
                "but “Use stored settings” is not ticked.",
                "Tick “Use stored settings” on /settings and press Save, or set OPENAI_API_KEY and restart.",
            ))
        else:
            found.append(Problem(
                "OPENAI_API_KEY",
                "The AI cannot answer customers: OpenAI refuses every call without a key. Customer messages are "
                "still stored and shown in the inbox.",
                "Set OPENAI_API_KEY=sk-... and restart, or save a key on /settings with “Use stored settings” "
                "ticked.",
            ))
    if not config.whatsapp_app_secret:
        found.append(Problem(
            "WHATSAPP_APP_SECRET",
            "No customer message arrives: every webhook from Meta is refused (403), because its signature "
            "cannot be checked.",
            "Set WHATSAPP_APP_SECRET to the app secret (Meta developer dashboard → App settings → Basic) and "
            "restart.",
        ))
    if not config.whatsapp_access_token:
        found.append(Problem(
            "WHATSAPP_ACCESS_TOKEN",
            "Replies cannot go out on WhatsApp: Meta refuses sends without a token (the inbox's Test chat "
            "still works).",
            "Set WHATSAPP_ACCESS_TOKEN to a system user token of your WhatsApp Business app and restart.",
        ))
    return found


async def check(config: Config, stored: StoredSettings) -> list[Problem]:
    """The problems of the running server, reading the settings page's stored values."""
    view = await stored.view()
    saved = await stored.stored()
    return problems(config, key_in_use=view.openai_api_key_set,
                    key_saved_unused=bool(saved.openai_api_key_enc) and not view.use_stored)
