"""Boot configuration: CLI > environment > defaults, frozen once read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bot.domain.hours import BusinessHours

DEFAULT_INSTRUCTIONS = (
    "You are the WhatsApp assistant of {{Cliente}}. Answer customers briefly, kindly and accurately, "
    "as a helpful shop assistant would. Always answer in the customer's language. Use the tools to look "
    "up products, take orders and update the customer's details; never invent prices, stock or order "
    "numbers. If you cannot help, say that a person from {{Cliente}} will follow up."
)

DEFAULT_HANDOFF_KEYWORDS = (
    "operatore", "persona reale", "parlare con una persona", "umano",
    "operator", "human", "real person", "talk to a person", "agent",
    "humano", "persona real", "hablar con una persona",
    "opérateur", "conseiller", "parler à quelqu'un", "une personne",
    "mitarbeiter", "echter mensch", "mit einem menschen",
)


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message says which and how to fix it."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be 1 or 0 (got {raw!r})")


def _int(name: str, raw: str, *, minimum: int = 0) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {raw!r})") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {value})")
    return value


def _float(name: str, raw: str, *, minimum: float = 0.0) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number (got {raw!r})") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {value})")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server needs to boot. Stored settings may override the AI part at run time."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    database: str = ""  # BOT_DATABASE_URL: postgresql://… for several processes; empty = SQLite in data_dir
    openai_api_key: str = ""
    openai_base_url: str | None = None
    model: str = "gpt-4o-mini"
    instructions: str = DEFAULT_INSTRUCTIONS
    client_name: str = "our shop"
    whatsapp_access_token: str = ""
    whatsapp_phone_number_id: str = ""
    whatsapp_business_account_id: str = ""  # the WABA: its message templates are synced from it
    whatsapp_app_secret: str = ""
    whatsapp_verify_token: str = ""
    whatsapp_api_base: str = "https://graph.facebook.com/v23.0"
    autoreply: bool = True
    reaction: bool = False
    reaction_emoji: str = "🤖"
    human_cooldown_seconds: int = 0
    burst_window_ms: int = 1000
    actor_idle_seconds: float = 300.0
    max_concurrent_ai: int = 64
    max_concurrent_turns: int = 64
    customer_turns_per_hour: int = 60
    loop_reply_seconds: float = 2.0  # BOT_LOOP_REPLY_SECONDS: a "customer" this fast, ten times running, is a bot
    monthly_budget: float | None = None  # BOT_MONTHLY_BUDGET, in the currency of the price table
    opening_hours: str = ""  # BOT_OPENING_HOURS, e.g. "mon-fri 09:00-18:00, sat 09:00-13:00"
    time_zone: str = "UTC"  # BOT_TIME_ZONE, an IANA name such as Europe/Rome
    ai_outside_hours_only: bool = False
    window_template: str = ""  # BOT_WINDOW_TEMPLATE: "name" or "name:language" for texts outside 24 h
    send_rate: float = 80.0
    tools_path: tuple[str, ...] = ()
    handoff_keywords: tuple[str, ...] = DEFAULT_HANDOFF_KEYWORDS
    public_url: str = "http://127.0.0.1:8080"
    trusted_proxies: tuple[str, ...] = ()
    admin_password: str = ""
    api_token: str = ""
    secret_key: str = ""
    build_id: str = ""  # BOT_BUILD_ID: shown on /ai-diagnostics (else a BUILD_ID file, else git)
    # Not part of the public contract: knobs for tests, benchmarks and unusual deployments.
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 30.0
    retry_budget_seconds: float = 120.0
    max_attempts: int = 5
    openai_timeout_seconds: float = 60.0
    graph_timeout_seconds: float = 20.0
    max_tool_rounds: int = 8
    tool_timeout_seconds: float = 20.0
    shutdown_timeout_seconds: float = 10.0
    # A client must send a whole request head within this many seconds of connecting (or of the last
    # answer on a kept-alive connection), and its body may stall no longer than body_timeout_seconds.
    header_timeout_seconds: float = 15.0
    body_timeout_seconds: float = 30.0
    transcription_model: str = "gpt-4o-mini-transcribe"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        """The SQLite database file (the embedded default)."""
        return self.data_dir / "bot.db"

    @property
    def database_url(self) -> str:
        """What `Database.create` opens: BOT_DATABASE_URL, or the SQLite file in the data directory."""
        return self.database or str(self.db_path)

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with some fields replaced (tests and the CLI use this)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **cli: Any) -> Config:
        """Read the environment, then apply CLI values that were given (None means not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def has(name: str) -> bool:
            return name in env and env[name] != ""

        strings = {
            "BOT_HOST": "host",
            "OPENAI_API_KEY": "openai_api_key",
            "BOT_MODEL": "model",
            "BOT_INSTRUCTIONS": "instructions",
            "BOT_CLIENT_NAME": "client_name",
            "WHATSAPP_ACCESS_TOKEN": "whatsapp_access_token",
            "WHATSAPP_PHONE_NUMBER_ID": "whatsapp_phone_number_id",
            "WHATSAPP_BUSINESS_ACCOUNT_ID": "whatsapp_business_account_id",
            "WHATSAPP_APP_SECRET": "whatsapp_app_secret",
            "WHATSAPP_VERIFY_TOKEN": "whatsapp_verify_token",
            "BOT_REACTION_EMOJI": "reaction_emoji",
            "BOT_ADMIN_PASSWORD": "admin_password",
            "BOT_API_TOKEN": "api_token",
            "BOT_SECRET_KEY": "secret_key",
            "BOT_BUILD_ID": "build_id",
            "BOT_TRANSCRIPTION_MODEL": "transcription_model",
            "BOT_DATABASE_URL": "database",
            "BOT_OPENING_HOURS": "opening_hours",
            "BOT_TIME_ZONE": "time_zone",
            "BOT_WINDOW_TEMPLATE": "window_template",
        }
        for env_name, attr in strings.items():
            if has(env_name):
                values[attr] = env[env_name]
        if has("OPENAI_BASE_URL"):
            values["openai_base_url"] = env["OPENAI_BASE_URL"].rstrip("/")
        if has("WHATSAPP_API_BASE"):
            values["whatsapp_api_base"] = env["WHATSAPP_API_BASE"].rstrip("/")
        if has("BOT_PUBLIC_URL"):
            values["public_url"] = env["BOT_PUBLIC_URL"].rstrip("/")
        if has("BOT_DATA_DIR"):
            values["data_dir"] = Path(env["BOT_DATA_DIR"])
        if has("BOT_PORT"):
            values["port"] = _int("BOT_PORT", env["BOT_PORT"], minimum=0)
        if has("BOT_MONTHLY_BUDGET"):
            values["monthly_budget"] = _float("BOT_MONTHLY_BUDGET", env["BOT_MONTHLY_BUDGET"])
        for env_name, attr in (("BOT_AUTOREPLY", "autoreply"), ("BOT_REACTION", "reaction"),
                               ("BOT_AI_OUTSIDE_HOURS_ONLY", "ai_outside_hours_only")):
            if env_name in env:
                values[attr] = _bool(env_name, env[env_name])
        ints = {
            "BOT_HUMAN_COOLDOWN_SECONDS": "human_cooldown_seconds",
            "BOT_BURST_WINDOW_MS": "burst_window_ms",
            "BOT_MAX_CONCURRENT_AI": "max_concurrent_ai",
            "BOT_MAX_CONCURRENT_TURNS": "max_concurrent_turns",
            "BOT_CUSTOMER_TURNS_PER_HOUR": "customer_turns_per_hour",
            "BOT_MAX_ATTEMPTS": "max_attempts",
        }
        for env_name, attr in ints.items():
            if has(env_name):
                values[attr] = _int(env_name, env[env_name], minimum=1 if attr.startswith("max") else 0)
        floats = {
            "BOT_ACTOR_IDLE_SECONDS": "actor_idle_seconds",
            "BOT_SEND_RATE": "send_rate",
            "BOT_RETRY_BASE_SECONDS": "retry_base_seconds",
            "BOT_RETRY_MAX_SECONDS": "retry_max_seconds",
            "BOT_RETRY_BUDGET_SECONDS": "retry_budget_seconds",
            "BOT_OPENAI_TIMEOUT_SECONDS": "openai_timeout_seconds",
            "BOT_GRAPH_TIMEOUT_SECONDS": "graph_timeout_seconds",
            "BOT_TOOL_TIMEOUT_SECONDS": "tool_timeout_seconds",
            "BOT_LOOP_REPLY_SECONDS": "loop_reply_seconds",
            "BOT_HEADER_TIMEOUT_SECONDS": "header_timeout_seconds",
            "BOT_BODY_TIMEOUT_SECONDS": "body_timeout_seconds",
            "BOT_SHUTDOWN_TIMEOUT_SECONDS": "shutdown_timeout_seconds",
        }
        for env_name, attr in floats.items():
            if has(env_name):
                values[attr] = _float(env_name, env[env_name])
        if values.get("send_rate", 1.0) <= 0:
            raise ConfigError("BOT_SEND_RATE must be above 0")
        for env_name, attr in (
            ("BOT_TOOLS_PATH", "tools_path"),
            ("BOT_HANDOFF_KEYWORDS", "handoff_keywords"),
            ("BOT_TRUSTED_PROXIES", "trusted_proxies"),
        ):
            if env_name in env:
                raw = env[env_name]
                values[attr] = tuple(p for p in raw.split(os.pathsep) if p) if attr == "tools_path" else _list(raw)
        if values.get("opening_hours"):
            try:
                BusinessHours.parse(values["opening_hours"], values.get("time_zone", "UTC"))
            except ValueError as exc:
                raise ConfigError(f"BOT_OPENING_HOURS / BOT_TIME_ZONE: {exc}") from None
        database = values.get("database", "")
        if database and not database.startswith(("postgres://", "postgresql://", "sqlite:")):
            raise ConfigError("BOT_DATABASE_URL must start with postgresql:// (or be unset for SQLite in the data "
                              f"directory); got {database.split(':', 1)[0]!r}")
        for name, value in cli.items():
            if value is not None:
                values[name] = Path(value) if name == "data_dir" else value
        if "public_url" not in values:
            host = values.get("host", "127.0.0.1")
            port = values.get("port", 8080)
            values["public_url"] = f"http://{host}:{port}"
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**values)
