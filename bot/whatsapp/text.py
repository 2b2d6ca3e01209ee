"""Splitting long replies into WhatsApp-sized parts at sentence boundaries."""

from __future__ import annotations

import re

MAX_TEXT = 4096
# Below Meta's 4096 limit, so a part never lands on the edge.
PART_LIMIT = 4000

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n{2,}|\n")


def split_text(text: str, limit: int = PART_LIMIT) -> list[str]:
    """Split into parts of at most `limit` characters, preferring paragraph and sentence ends."""
    text = text.strip()
    if not text:
        return []
    parts: list[str] = []
    while len(text) > limit:
        window = text[: limit + 1]
        cut = -1
        for match in _SENTENCE_END.finditer(window):
            if 0 < match.start() <= limit:
                cut = match.start()
        if cut <= limit // 4:
            space = window.rfind(" ", 0, limit)
            cut = space if space > limit // 4 else limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts
