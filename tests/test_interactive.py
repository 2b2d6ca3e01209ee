"""Choices as reply buttons, a list or numbered text, and typed answers matched back to a choice."""

from __future__ import annotations

from typing import Any

import pytest

from bot.whatsapp.interactive import Choice, match_choice, render_choices
from tests.fakes.graph_shapes import check_interactive

# Nothing here opens a database: the PostgreSQL half of the suite leaves these to the SQLite half.
pytestmark = pytest.mark.no_database

BAGS = [{"id": "product-sku-001", "title": "Borsa rossa", "description": "Pelle, 30 cm"},
        {"id": "product-sku-002", "title": "Borsa nera", "description": "Tela, 40 cm"}]


def test_three_short_titles_become_reply_buttons() -> None:
    rendered = render_choices("Confermi l'ordine?", [{"id": "confirm-order", "title": "Conferma"},
                                                    {"id": "cancel-order", "title": "Annulla"}])
    assert rendered.kind == "button"
    assert rendered.interactive == {
        "type": "button", "body": {"text": "Confermi l'ordine?"},
        "action": {"buttons": [{"type": "reply", "reply": {"id": "confirm-order", "title": "Conferma"}},
                               {"type": "reply", "reply": {"id": "cancel-order", "title": "Annulla"}}]},
    }
    assert rendered.text == "Confermi l'ordine?\n\n1. Conferma\n2. Annulla"
    assert check_interactive(rendered.interactive) is None


def test_descriptions_go_to_a_list_with_a_localised_button() -> None:
    rendered = render_choices("Quale borsa preferisci?", BAGS, language="it-IT")
    assert rendered.kind == "list"
    assert rendered.interactive == {
        "type": "list", "body": {"text": "Quale borsa preferisci?"},
        "action": {"button": "Scegli", "sections": [{"rows": BAGS}]},
    }
    assert rendered.text == "Quale borsa preferisci?\n\n1. Borsa rossa — Pelle, 30 cm\n2. Borsa nera — Tela, 40 cm"
    assert check_interactive(rendered.interactive) is None


@pytest.mark.parametrize("language, label", [("en", "Choose"), ("es", "Elegir"), ("fr", "Choisir"),
                                             ("de", "Auswählen"), ("pt", "Choose"), (None, "Choose")])
def test_list_button_labels(language: str | None, label: str) -> None:
    choices = [{"id": str(n), "title": f"Option {n}"} for n in range(1, 6)]
    rendered = render_choices("Pick one", choices, language=language)
    assert rendered.kind == "list"
    assert rendered.interactive is not None and rendered.interactive["action"]["button"] == label


def test_a_title_over_20_characters_moves_three_choices_to_a_list() -> None:
    choices = [{"id": "a", "title": "A" * 21}, {"id": "b", "title": "B"}]
    rendered = render_choices("Which?", choices)
    assert rendered.kind == "list"
    assert check_interactive(rendered.interactive) is None


@pytest.mark.parametrize("choices", [
    [{"id": str(n), "title": f"Option {n}"} for n in range(11)],  # eleven rows
    [{"id": "a", "title": "T" * 25}],  # a title too long even for a list
    [{"id": "a", "title": "ok", "description": "d" * 73}],  # a description too long
])
def test_anything_larger_is_numbered_text(choices: list[dict[str, Any]]) -> None:
    rendered = render_choices("Which one?", choices, language="fr")
    assert (rendered.kind, rendered.interactive) == ("text", None)
    assert rendered.text.startswith("Which one?\n\n1. ")
    assert rendered.text.endswith("Répondez avec le numéro de votre choix.")
    assert f"{len(choices)}. " in rendered.text


def test_a_long_question_is_numbered_text() -> None:
    assert render_choices("?" * 1025, [{"id": "a", "title": "A"}]).kind == "text"


def test_invalid_choices_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="at least one"):
        render_choices("Which?", [])
    with pytest.raises(ValueError, match="choice 2 needs"):
        render_choices("Which?", [{"id": "a", "title": "A"}, {"id": "b", "title": " "}])
    with pytest.raises(ValueError, match="repeats the id"):
        render_choices("Which?", [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}])
    with pytest.raises(ValueError, match="question"):
        render_choices("  ", [{"id": "a", "title": "A"}])


def test_match_by_number_title_or_id() -> None:
    choices = [{"id": "espresso", "title": "Caffè"}, {"id": "tea-green", "title": "Tè verde"},
               {"id": "cocoa", "title": "Cioccolata calda"}]
    assert match_choice("2", choices) == Choice("tea-green", "Tè verde")
    assert match_choice(" 3. ", choices) == Choice("cocoa", "Cioccolata calda")
    assert match_choice("1️⃣", choices) == Choice("espresso", "Caffè")
    assert match_choice("caffe", choices) == Choice("espresso", "Caffè")
    assert match_choice("TE  VERDE!", choices) == Choice("tea-green", "Tè verde")
    assert match_choice("tea-green", choices) == Choice("tea-green", "Tè verde")
    assert match_choice("٢", choices) == Choice("tea-green", "Tè verde")  # Arabic-Indic digit two


@pytest.mark.parametrize("answer", ["0", "4", "the second one", "", None, "caffè latte", "..."])
def test_no_match(answer: str | None) -> None:
    choices = [{"id": "espresso", "title": "Caffè"}, {"id": "tea", "title": "Tè"}, {"id": "cocoa", "title": "Cacao"}]
    assert match_choice(answer, choices) is None


def test_a_shared_title_matches_neither() -> None:
    choices = [{"id": "s-red", "title": "Small"}, {"id": "m-red", "title": "small"}]
    assert match_choice("small", choices) is None
    assert match_choice("m-red", choices) == Choice("m-red", "small")
    assert render_choices("Size?", choices).kind == "list"  # buttons need distinct titles
