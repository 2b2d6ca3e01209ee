"""Choices offered to a customer, and reading their answer back: channel-neutral, pure functions.

A channel renders choices its own way (WhatsApp: reply buttons, a list, or numbered text); the
answer comes back as a tap on one of them or as typed text, understood here the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Choice:
    """One option: `id` comes back in the customer's tap, `title` is what they see."""

    id: str
    title: str
    description: str | None = None


def clean(value: Any) -> str | None:
    """A non-empty stripped string, or None."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def to_choices(choices: Sequence[Mapping[str, Any] | Choice]) -> list[Choice]:
    """Validate `{id, title, description?}` items; ValueError says which item is wrong and how."""
    result: list[Choice] = []
    seen: set[str] = set()
    for index, item in enumerate(choices, start=1):
        if isinstance(item, Choice):
            result.append(item)
        elif not isinstance(item, Mapping):
            raise ValueError(f"choice {index} must be an object with an id and a title")
        else:
            ident = item.get("id")
            ident = str(ident).strip() if isinstance(ident, str | int) and not isinstance(ident, bool) else None
            title = clean(item.get("title"))
            if not ident or title is None:
                raise ValueError(f"choice {index} needs a non-empty id and title")
            result.append(Choice(ident, title, clean(item.get("description"))))
        if result[-1].id in seen:
            raise ValueError(f"choice {index} repeats the id {result[-1].id!r}: ids must be unique")
        seen.add(result[-1].id)
    if not result:
        raise ValueError("offer at least one choice")
    return result


_KEYCAP = re.compile("[\ufe0f\u20e3]")
_EDGES = re.compile(r"^[\s#.,;:!?()\[\]\"'«»“”‘’*_-]+|[\s#.,;:!?()\[\]\"'«»“”‘’*_-]+$")


def _fold(value: str) -> str:
    """Case-, accent- and width-insensitive form, with surrounding punctuation and inner runs of space gone."""
    decomposed = unicodedata.normalize("NFKD", _KEYCAP.sub("", value))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(_EDGES.sub("", bare.casefold()).split())


def match_choice(text: str | None, choices: Sequence[Mapping[str, Any] | Choice]) -> Choice | None:
    """The choice a typed answer names: its number ("2", "2.", "2️⃣"), its title or its id; else None.

    Titles are compared without case or accents ("caffe" is "Caffè"). A title two choices share
    matches neither.
    """
    if not text:
        return None
    items = to_choices(choices)
    answer = _fold(text)
    if not answer:
        return None
    if answer.isdecimal():
        number = int(answer)
        return items[number - 1] if 1 <= number <= len(items) else None
    for key in (lambda c: _fold(c.title), lambda c: _fold(c.id)):
        found = [c for c in items if key(c) == answer]
        if len(found) == 1:
            return found[0]
    return None


def plain(text: str, choices: Sequence[Choice]) -> str:
    """The question and its choices as plain text (the inbox's and the model's record of the offer)."""
    lines = [f"{n}. {c.title}" + (f" — {c.description}" if c.description else "") for n, c in
             enumerate(choices, start=1)]
    return f"{text.strip()}\n\n" + "\n".join(lines)
