"""Offering the customer choices: reply buttons, a list, or numbered text, and reading the answer back.

Pure functions, no I/O. `render_choices` picks the richest form WhatsApp allows for the choices given
(Meta's limits: 3 reply buttons with titles of 20 characters; a list of 10 rows with titles of 24
and descriptions of 72 characters, behind a button of 20), and numbered text for anything larger.
`match_choice` understands a typed answer to any of the three forms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.domain.choices import Choice, clean, match_choice, plain, to_choices

__all__ = ["Choice", "RenderedChoices", "match_choice", "numbered_text", "render_choices", "to_choices"]

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


def numbered_text(text: str, choices: Sequence[Choice]) -> str:
    """The question followed by "1. title — description" lines."""
    return plain(text, choices)


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
        label = (clean(button_label) or LIST_BUTTON_LABELS[lang])[:LIST_BUTTON_MAX]
        rows = [{"id": c.id, "title": c.title, **({"description": c.description} if c.description else {})}
                for c in items]
        body = {"type": "list", "body": {"text": question}, "action": {"button": label, "sections": [{"rows": rows}]}}
        return RenderedChoices("list", body, plain)
    return RenderedChoices("text", None, f"{plain}\n\n{NUMBER_HINTS[lang]}")
