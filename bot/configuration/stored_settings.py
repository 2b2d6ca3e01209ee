"""AI Assistant Settings saved from the settings page: validation, storage, and a SettingsSource over them.

When "Use stored settings" is ticked, the saved values override the env ones (the original module's
"Use this DocType for configuration"). The knowledge base's file_search tool is added whenever the
knowledge base is enabled and ready, whichever way that box is set: it has no env equivalent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import structlog

from bot.ai.knowledge import MODES, file_search_tools
from bot.configuration.config import Config
from bot.configuration.secrets import SecretBox, SecretUnreadable, mask
from bot.configuration.settings import LOCAL_KB_TOOL, RuntimeSettings, parse_template_choice, settings_from_config
from bot.domain.hours import BusinessHours
from bot.persistence.assistant import AssistantSettingsRepo, KnowledgeRepo, StoredAssistantSettings
from bot.persistence.usage import BusinessSettings, BusinessSettingsRepo

log = structlog.get_logger("bot.settings")

MAX_COOLDOWN_SECONDS = 30 * 24 * 3600
MAX_BURST_WINDOW_MS = 10_000
MAX_INSTRUCTIONS = 20_000
MAX_EMOJI_CODEPOINTS = 10  # family and flag emoji are several code points joined together
BOOL_FIELDS = ("use_stored", "autoreply", "reaction", "kb_enabled")
TEXT_FIELDS = ("model", "instructions", "client_name", "reaction_emoji", "kb_mode")
INT_FIELDS = ("human_cooldown_seconds", "burst_window_ms")
FIELDS = (*BOOL_FIELDS, *TEXT_FIELDS, *INT_FIELDS)
_TRUE = {"1", "true", "on", "yes"}


@dataclass(frozen=True, slots=True)
class SettingsView:
    """What the settings page shows: saved values, or the env value wherever nothing was saved."""

    use_stored: bool
    model: str
    instructions: str
    client_name: str
    autoreply: bool
    reaction: bool
    reaction_emoji: str
    human_cooldown_seconds: int
    burst_window_ms: int
    kb_enabled: bool
    kb_mode: str
    openai_api_key_set: bool
    openai_api_key_masked: str
    openai_api_key_source: str  # "stored", "env" or "none": the key that turns use
    openai_api_key_problem: str | None
    updated_at: float | None
    updated_by: str | None

    def values(self) -> dict[str, Any]:
        """The editable fields only."""
        data = asdict(self)
        return {name: data[name] for name in FIELDS}


@dataclass(frozen=True, slots=True)
class KeyChange:
    """What a save does to the stored OpenAI key: keep it, set a new one, or clear it."""

    action: str = "keep"  # keep | set | clear
    value: str = ""


@dataclass(frozen=True, slots=True)
class Validated:
    """A checked submission: values to save (when `errors` is empty) and per-field messages."""

    values: dict[str, Any]
    key: KeyChange
    errors: dict[str, str]


def _as_bool(raw: object, *, form: bool) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if form and isinstance(raw, str):
        return raw.strip().lower() in _TRUE
    return None


def _as_int(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            return None
    return None


def validate(raw: Mapping[str, Any], current: SettingsView, *, form: bool) -> Validated:
    """Check a settings submission. A form sends every field (an unticked box is absent); JSON may send some.

    Values that fail keep what was typed, so the page can show them again next to the message.
    """
    values = current.values()
    errors: dict[str, str] = {}
    for name in BOOL_FIELDS:
        if form:
            values[name] = _as_bool(raw.get(name, ""), form=True)
        elif name in raw:
            parsed = _as_bool(raw[name], form=False)
            if parsed is None:
                errors[name] = "Must be true or false."
            else:
                values[name] = parsed
    for name in TEXT_FIELDS:
        if name in raw or form:
            value = raw.get(name, "")
            if not isinstance(value, str):
                errors[name] = "Must be text."
                continue
            values[name] = value.strip() if name != "instructions" else value.replace("\r\n", "\n").strip()
    for name in INT_FIELDS:
        if name in raw or form:
            value = raw.get(name, "")
            number = _as_int(value)
            if number is None:
                errors[name] = "Enter a whole number, like 0 or 30."
                values[name] = value if isinstance(value, str) else str(value)
            else:
                values[name] = number

    model = values["model"]
    if "model" not in errors:
        if not model:
            errors["model"] = "Enter a model name, for example gpt-4o-mini."
        elif len(model) > 100 or any(ch.isspace() for ch in model):
            errors["model"] = "A model name has no spaces and is short, for example gpt-4o-mini."
    if "instructions" not in errors:
        if not values["instructions"]:
            errors["instructions"] = "Write the instructions the assistant follows (they can use {{Cliente}})."
        elif len(values["instructions"]) > MAX_INSTRUCTIONS:
            errors["instructions"] = f"The instructions are too long: keep them under {MAX_INSTRUCTIONS} characters."
    if "client_name" not in errors and len(values["client_name"]) > 200:
        errors["client_name"] = "Keep the business name under 200 characters."
    if "reaction_emoji" not in errors:
        emoji = values["reaction_emoji"]
        if len(emoji) > MAX_EMOJI_CODEPOINTS:
            errors["reaction_emoji"] = "Use a single emoji, like 🤖: this is too long."
        elif any(ch.isspace() or (ch.isascii() and ch.isalnum()) for ch in emoji):
            errors["reaction_emoji"] = "Use a single emoji, like 🤖, with no letters or spaces."
        elif values["reaction"] is True and not emoji:
            errors["reaction_emoji"] = "Choose the emoji to react with, or untick the reaction."
    cooldown = values["human_cooldown_seconds"]
    if "human_cooldown_seconds" not in errors and isinstance(cooldown, int):
        if cooldown < 0:
            errors["human_cooldown_seconds"] = "The cooldown cannot be negative: use 0 to wait for a hand-back."
        elif cooldown > MAX_COOLDOWN_SECONDS:
            errors["human_cooldown_seconds"] = "The cooldown can be at most 30 days (2592000 seconds)."
    burst = values["burst_window_ms"]
    if "burst_window_ms" not in errors and isinstance(burst, int) and not 0 <= burst <= MAX_BURST_WINDOW_MS:
        errors["burst_window_ms"] = f"Use a value from 0 to {MAX_BURST_WINDOW_MS} milliseconds."
    if "kb_mode" not in errors and values["kb_mode"] not in MODES:
        errors["kb_mode"] = "Choose “OpenAI vector store” or “local”."

    key = KeyChange()
    raw_key = raw.get("openai_api_key")
    if form and str(raw.get("clear_api_key", "")).lower() in _TRUE:
        key = KeyChange("clear")
    elif not form and "openai_api_key" in raw and raw_key is None:
        key = KeyChange("clear")
    elif raw_key is not None:
        if not isinstance(raw_key, str):
            errors["openai_api_key"] = "Must be text."
        elif raw_key.strip():
            candidate = raw_key.strip()
            if len(candidate) < 20 or len(candidate) > 400 or any(ch.isspace() for ch in candidate):
                errors["openai_api_key"] = ("That does not look like an OpenAI API key (they look like "
                                            "sk-… and are long, with no spaces). Copy it again from OpenAI.")
            else:
                key = KeyChange("set", candidate)
        elif not form:
            errors["openai_api_key"] = "Send the key, or null to remove the stored key."
    return Validated(values=values, key=key, errors=errors)


def _merged(stored: StoredAssistantSettings, env: RuntimeSettings) -> dict[str, Any]:
    """The one rule for a stored value over its env value (what turns run with and what the page shows)."""
    return {
        "model": stored.model or env.ai.model,
        "instructions": stored.instructions or env.ai.instructions,
        "client_name": stored.client_name if stored.client_name is not None else env.ai.client_name,
        "autoreply": env.autoreply if stored.autoreply is None else stored.autoreply,
        "reaction": env.reaction if stored.reaction is None else stored.reaction,
        "reaction_emoji": stored.reaction_emoji or env.reaction_emoji,
        "human_cooldown_seconds": _or(stored.human_cooldown_seconds, env.human_cooldown_seconds),
        "burst_window_ms": _or(stored.burst_window_ms, env.burst_window_ms),
    }


class StoredSettings:
    """The settings source of the running server; reads are cached briefly and a save clears the cache."""

    def __init__(
        self,
        *,
        config: Config,
        repo: AssistantSettingsRepo,
        knowledge: KnowledgeRepo,
        box: SecretBox,
        business: BusinessSettingsRepo | None = None,
        ttl_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._env = settings_from_config(config)
        self._repo = repo
        self._knowledge = knowledge
        self._business = business
        self._box = box
        self._ttl = ttl_seconds
        self._clock = clock
        self._cached: RuntimeSettings | None = None
        self._expires = 0.0
        self._generation = 0

    def invalidate(self) -> None:
        """Forget the cached settings: the next turn reads the database."""
        self._cached = None
        self._generation += 1

    async def current(self) -> RuntimeSettings:
        """The settings for the next turn."""
        if self._cached is not None and self._clock() < self._expires:
            return self._cached
        generation = self._generation
        stored = await self._repo.get()
        doc = await self._knowledge.get()
        settings = self._env
        if stored.use_stored:
            key, _problem = self._stored_key(stored)
            env = self._env
            merged = _merged(stored, env)
            settings = replace(
                env,
                ai=replace(
                    env.ai,
                    api_key=key or env.ai.api_key,
                    model=merged["model"],
                    instructions=merged["instructions"],
                    client_name=merged["client_name"],
                ),
                autoreply=merged["autoreply"],
                reaction=merged["reaction"],
                reaction_emoji=merged["reaction_emoji"],
                human_cooldown_seconds=merged["human_cooldown_seconds"],
                burst_window_ms=merged["burst_window_ms"],
            )
        local_ready = bool(stored.kb_enabled and doc is not None and doc.mode == "local" and doc.status == "ready")
        hidden = settings.ai.hidden_tools - {LOCAL_KB_TOOL}
        if not local_ready:
            hidden = hidden | {LOCAL_KB_TOOL}
        settings = replace(settings, ai=replace(settings.ai, hidden_tools=hidden))
        extra = file_search_tools(doc, enabled=stored.kb_enabled)
        if extra:
            settings = replace(settings, ai=replace(settings.ai, extra_tools=(*settings.ai.extra_tools, *extra)))
        if self._business is not None:
            settings = with_business(settings, await self._business.get())
        # A save during the reads above must not be hidden behind this (older) result.
        if generation == self._generation:
            self._cached = settings
            self._expires = self._clock() + self._ttl
        return settings

    def _stored_key(self, stored: StoredAssistantSettings) -> tuple[str, str | None]:
        if not stored.openai_api_key_enc:
            return "", None
        try:
            return self._box.decrypt(stored.openai_api_key_enc), None
        except SecretUnreadable as exc:
            log.error("stored_key_unreadable")
            return "", str(exc)

    async def stored(self) -> StoredAssistantSettings:
        """The saved row, uncached."""
        return await self._repo.get()

    async def view(self) -> SettingsView:
        """What the settings page and GET /api/settings show (never the key itself)."""
        stored = await self._repo.get()
        env = self._env
        stored_key, problem = self._stored_key(stored)
        if stored.use_stored and stored_key:
            key, source = stored_key, "stored"
        elif env.ai.api_key:
            key, source = env.ai.api_key, "env"
        else:
            key, source = "", "none"
        return SettingsView(
            use_stored=stored.use_stored,
            **_merged(stored, env),
            kb_enabled=stored.kb_enabled,
            kb_mode=stored.kb_mode,
            openai_api_key_set=bool(key),
            openai_api_key_masked=mask(key),
            openai_api_key_source=source,
            openai_api_key_problem=problem,
            updated_at=stored.updated_at,
            updated_by=stored.updated_by,
        )

    async def key_for_test(self, change: KeyChange, *, use_stored: bool) -> str:
        """The key a "Test connection" should use: the one just typed, else the one the form would put in force."""
        if change.action == "set":
            return change.value
        if use_stored and change.action == "keep":
            stored_key, _problem = self._stored_key(await self._repo.get())
            if stored_key:
                return stored_key
        return self._env.ai.api_key

    async def save(self, checked: Validated, *, updated_by: str | None) -> None:
        """Store a validated submission (the key encrypted) and apply it from the next turn."""
        if checked.errors:
            raise ValueError("refusing to save settings with errors")
        current = await self._repo.get()
        encrypted = current.openai_api_key_enc
        if checked.key.action == "set":
            encrypted = self._box.encrypt(checked.key.value)
        elif checked.key.action == "clear":
            encrypted = None
        values = checked.values
        row = StoredAssistantSettings(
            use_stored=bool(values["use_stored"]),
            openai_api_key_enc=encrypted,
            model=values["model"],
            instructions=values["instructions"],
            client_name=values["client_name"],
            autoreply=bool(values["autoreply"]),
            reaction=bool(values["reaction"]),
            reaction_emoji=values["reaction_emoji"],
            human_cooldown_seconds=int(values["human_cooldown_seconds"]),
            burst_window_ms=int(values["burst_window_ms"]),
            kb_enabled=bool(values["kb_enabled"]),
            kb_mode=values["kb_mode"],
        )
        await self._repo.save(row, updated_by=updated_by)
        self.invalidate()
        log.info("settings_saved", by=updated_by, use_stored=row.use_stored, key=checked.key.action)


def with_business(settings: RuntimeSettings, business: BusinessSettings) -> RuntimeSettings:
    """The business section of the settings page over the env values (each field when set)."""
    changes: dict[str, Any] = {}
    if business.monthly_budget is not None:
        changes["monthly_budget"] = business.monthly_budget
    if business.opening_hours:
        try:
            changes["hours"] = BusinessHours.parse(business.opening_hours, business.time_zone or "UTC")
        except ValueError:
            log.error("stored_opening_hours_unreadable")  # validated when saved; kept out of turns if not
    if business.opening_hours is not None or business.ai_outside_hours_only:
        changes["ai_outside_hours_only"] = business.ai_outside_hours_only
    if business.window_template:
        changes["window_template"] = parse_template_choice(business.window_template,
                                                           business.window_template_language)
    return replace(settings, **changes) if changes else settings


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
