"""Offering the customer choices: reply buttons, a list, or numbered text, and reading the answer back.

Pure functions, no I/O. `render_choices` picks the richest form WhatsApp allows for the choices given
(Meta's limits: 3 reply buttons with titles of 20 characters; a list of 10 rows with titles of 24
and descriptions of 72 characters, behind a button of 20), and numbered text for anything larger.
`match_choice` understands a typed answer to any of the three forms.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

BODY_MAX = 1024
BUTTONS_MAX = 3
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256
ROWS_MAX = 10
ROW_TITLE_MAX = 24
ROW_ID_MAX = 200
ROW_DESCRIPTION_MAX = 72
LIST_BUTTON_MAX = 20

# The list message's action button, in the languages of the server's own texts.
LIST_BUTTON_LABELS = {"en": "Choose", "it": "Scegli", "es": "Elegir", "fr": "Choisir", "de": "Auswählen"}
# Added below numbered text only: buttons and lists are answered by tapping.
NUMBER_HINTS = {
    "en": "Reply with the number of your choice.",
    "it": "Rispondi con il numero della tua scelta.",
    "es": "Responde con el número de tu elección.",
    "fr": "Répondez avec le numéro de votre choix.",
    "de": "Antworte mit der Nummer deiner Wahl.",
}


@dataclass(frozen=True, slots=True)
class Choice:
    """One option: `id` comes back in the customer's tap, `title` is what they see."""

    id: str
    title: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedChoices:
    """What to send and what to show.

    `kind` "button" or "list": send `interactive` with WhatsAppClient.send_interactive. `kind` "text":
    send `text` as a plain text message. `text` is always the plain rendering, for the inbox and for
    the model's record of what the customer was offered.
    """

    kind: Literal["button", "list", "text"]
    interactive: dict[str, Any] | None
    text: str


def _language(language: str | None) -> str:
    lang = (language or "en").split("-")[0].split("_")[0].lower()
    return lang if lang in LIST_BUTTON_LABELS else "en"


def _clean(value: Any) -> str | None:
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
            title = _clean(item.get("title"))
            if not ident or title is None:
                raise ValueError(f"choice {index} needs a non-empty id and title")
            result.append(Choice(ident, title, _clean(item.get("description"))))
        if result[-1].id in seen:
            raise ValueError(f"choice {index} repeats the id {result[-1].id!r}: ids must be unique")
        seen.add(result[-1].id)
    if not result:
        raise ValueError("offer at least one choice")
    return result


def numbered_text(text: str, choices: Sequence[Choice]) -> str:
    """The question followed by "1. title — description" lines."""
    lines = [f"{n}. {c.title}" + (f" — {c.description}" if c.description else "") for n, c in
             enumerate(choices, start=1)]
    return f"{text}\n\n" + "\n".join(lines)


def _fits_buttons(text: str, choices: Sequence[Choice]) -> bool:
    titles = {c.title.casefold() for c in choices}
    return (len(choices) <= BUTTONS_MAX and len(titles) == len(choices) and len(text) <= BODY_MAX
            # A description would be lost on a button: such choices go to a list, which shows it.
            and all(len(c.title) <= BUTTON_TITLE_MAX and len(c.id) <= BUTTON_ID_MAX and not c.description
                    for c in choices))


def _fits_list(text: str, choices: Sequence[Choice]) -> bool:
    return len(choices) <= ROWS_MAX and len(text) <= BODY_MAX and all(
        len(c.title) <= ROW_TITLE_MAX and len(c.id) <= ROW_ID_MAX
        and len(c.description or "") <= ROW_DESCRIPTION_MAX for c in choices
    )


def render_choices(text: str, choices: Sequence[Mapping[str, Any] | Choice], *, language: str | None = None,
                   button_label: str | None = None) -> RenderedChoices:
    """Reply buttons, a list message, or numbered text for `choices`, whichever the limits allow.

    `language` picks the list's action button label (en, it, es, fr, de; English otherwise) unless
    `button_label` is given. Raises ValueError for an empty question or invalid choices.
    """
    question = text.strip()
    if not question:
        raise ValueError("the question text is empty")
    items = to_choices(choices)
    lang = _language(language)
    plain = numbered_text(question, items)
    if _fits_buttons(question, items):
        buttons = [{"type": "reply", "reply": {"id": c.id, "title": c.title}} for c in items]
        body = {"type": "button", "body": {"text": question}, "action": {"buttons": buttons}}
        return RenderedChoices("button", body, plain)
    if _fits_list(question, items):
        label = (_clean(button_label) or LIST_BUTTON_LABELS[lang])[:LIST_BUTTON_MAX]
        rows = [{"id": c.id, "title": c.title, **({"description": c.description} if c.description else {})}
                for c in items]
        body = {"type": "list", "body": {"text": question}, "action": {"button": label, "sections": [{"rows": rows}]}}
        return RenderedChoices("list", body, plain)
    return RenderedChoices("text", None, f"{plain}\n\n{NUMBER_HINTS[lang]}")


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
