"""The one redaction step for everything bound for OpenAI, and masking for logs."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any

# Separators people and apps put inside phone numbers: spaces, dashes, dots, slashes, brackets.
_SEP = r"[\s\-./()\u00a0]*"
PHONE_MASK = "[phone number removed]"

Redactor = Callable[[str], str]


def mask_phone(number: str | None) -> str:
    """A log-safe form: +39******4567 (country part and last four digits only)."""
    if not number:
        return "-"
    digits = re.sub(r"\D", "", number)
    if len(digits) <= 6:
        return "*" * len(digits)
    return f"+{digits[:2]}{'*' * (len(digits) - 6)}{digits[-4:]}"


def _digit_pattern(digits: str) -> str:
    return _SEP.join(re.escape(d) for d in digits)


def make_redactor(numbers: Iterable[str | None]) -> Redactor:
    """Build (or reuse) a redactor that masks the given phone numbers in any common written format."""
    return _cached_redactor(tuple(sorted({n for n in numbers if n})))


@functools.lru_cache(maxsize=4096)
def _cached_redactor(numbers: tuple[str, ...]) -> Redactor:
    # Compiling the pattern costs most of a millisecond per turn; a conversation reuses its own.
    return _build_redactor(numbers)


def _build_redactor(numbers: Iterable[str | None]) -> Redactor:
    """Build a redactor that masks the given phone numbers in any common written format.

    A number written as +39 333 000 0000, 0039-333-0000000, (333) 000 0000 or 3330000000 is the same
    number to a person, so the pattern allows separators between digits, an optional + or 00 prefix,
    and the national part alone (the number without its 1–3 digit country code).
    """
    variants: set[str] = set()
    for number in numbers:
        digits = re.sub(r"\D", "", number or "")
        if len(digits) < 7:
            continue
        variants.add(digits)
        for cc in (1, 2, 3):
            national = digits[cc:]
            if len(national) >= 7:
                variants.add(national)
                # Italian-style trunk prefix 0 and US-style 1 are sometimes written before the national part.
                variants.add("0" + national)
    if not variants:
        return lambda text: text
    alternatives = "|".join(_digit_pattern(v) for v in sorted(variants, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\d)(?:(?:\+|00){_SEP})?(?:{alternatives})(?!\d)")

    def redact(text: str) -> str:
        return pattern.sub(PHONE_MASK, text) if text else text

    return redact


def redact_deep(value: Any, redact: Redactor) -> Any:
    """Apply a redactor to every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_deep(v, redact) for v in value]
    if isinstance(value, dict):
        # Image data URLs are base64: a digit run inside them is not a phone number, and masking it
        # would corrupt the picture.
        return {k: v if k == "image_url" else redact_deep(v, redact) for k, v in value.items()}
    return value
