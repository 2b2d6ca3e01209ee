"""Instructions templating: {{Cliente}} becomes the business's name, plus per-turn context lines."""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"\{\{\s*Cliente\s*\}\}")

LANGUAGE_NAMES = {
    "it": "Italian", "en": "English", "es": "Spanish", "fr": "French", "de": "German", "pt": "Portuguese",
    "nl": "Dutch", "ro": "Romanian", "pl": "Polish", "ru": "Russian", "ar": "Arabic", "zh-cn": "Chinese",
    "tr": "Turkish", "uk": "Ukrainian", "sq": "Albanian",
}


def render_instructions(template: str, client_name: str) -> str:
    """Replace every {{Cliente}} with the business name (Nome Cliente)."""
    return _PLACEHOLDER.sub(client_name, template)


def with_context(instructions: str, *, language: str | None, extra: list[str] | None = None) -> str:
    """Append the one-line context the model gets each turn (language, and anything else given)."""
    lines: list[str] = []
    if language:
        name = LANGUAGE_NAMES.get(language, language)
        lines.append(f"The customer writes in {name} ({language}); answer in that language.")
    lines.extend(extra or [])
    if not lines:
        return instructions
    return instructions.rstrip() + "\n\nContext for this turn:\n" + "\n".join(f"- {line}" for line in lines)
