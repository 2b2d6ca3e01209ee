"""The fake Graph API's checks of interactive and template send bodies, after Meta's documented shapes.

Each check returns None for a body Meta would take, or (code, details) for the error Meta answers:
100 for a missing or misplaced parameter, 131009 for a value out of its limits, 132000/132001/132015/
132016 for template sends that do not match an approved template. The limits are those of Meta's
"Interactive reply buttons messages", "Interactive list messages" and "Template messages" pages.
"""

from __future__ import annotations

import re
from typing import Any

Problem = tuple[int, str] | None

BODY_TEXT_MAX = 1024
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256
BUTTONS_MAX = 3
LIST_BUTTON_MAX = 20
ROW_TITLE_MAX = 24
ROW_ID_MAX = 200
ROW_DESCRIPTION_MAX = 72
ROWS_MAX = 10
SECTIONS_MAX = 10
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


def _text(value: Any, where: str, limit: int, *, required: bool = True) -> Problem:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        return 100, f"The parameter {where} is required."
    if len(value) > limit:
        return 131009, f"Param {where} must be at most {limit} characters long."
    return None


def check_interactive(interactive: Any) -> Problem:
    """Reply buttons (`type: button`) or a list (`type: list`): the only interactive kinds the bot sends."""
    if not isinstance(interactive, dict):
        return 100, "The parameter interactive is required."
    kind = interactive.get("type")
    if kind not in ("button", "list"):
        return 100, "Param interactive['type'] must be one of {BUTTON, LIST} for this fake."
    body = interactive.get("body")
    problem = _text(body.get("text") if isinstance(body, dict) else None, "interactive['body']['text']",
                    BODY_TEXT_MAX)
    if problem:
        return problem
    action = interactive.get("action")
    if not isinstance(action, dict):
        return 100, "The parameter interactive['action'] is required."
    return _check_buttons(action) if kind == "button" else _check_list(action)


def _items(action: dict[str, Any], key: str, limit: int) -> list[Any] | tuple[int, str]:
    """action[key] as a non-empty list of at most `limit` items, or the error for it."""
    items = action.get(key)
    if not isinstance(items, list) or not items:
        return 100, f"The parameter interactive['action']['{key}'] is required."
    if len(items) > limit:
        return 131009, f"Param interactive['action']['{key}'] must have at most {limit} items."
    return items


def _check_buttons(action: dict[str, Any]) -> Problem:
    buttons = _items(action, "buttons", BUTTONS_MAX)
    if isinstance(buttons, tuple):
        return buttons
    ids: set[str] = set()
    titles: set[str] = set()
    for i, button in enumerate(buttons):
        where = f"interactive['action']['buttons'][{i}]"
        if not isinstance(button, dict) or button.get("type") != "reply" or not isinstance(button.get("reply"), dict):
            return 100, f"Param {where} must be {{'type': 'reply', 'reply': {{'id', 'title'}}}}."
        reply = button["reply"]
        problem = _text(reply.get("id"), f"{where}['reply']['id']", BUTTON_ID_MAX) or _text(
            reply.get("title"), f"{where}['reply']['title']", BUTTON_TITLE_MAX)
        if problem:
            return problem
        if reply["id"] in ids or reply["title"] in titles:
            return 131009, "Button ids and titles must be unique."
        ids.add(reply["id"])
        titles.add(reply["title"])
    return None


def _check_list(action: dict[str, Any]) -> Problem:
    problem = _text(action.get("button"), "interactive['action']['button']", LIST_BUTTON_MAX)
    if problem:
        return problem
    sections = _items(action, "sections", SECTIONS_MAX)
    if isinstance(sections, tuple):
        return sections
    ids: set[str] = set()
    for s, section in enumerate(sections):
        where = f"interactive['action']['sections'][{s}]"
        if not isinstance(section, dict) or not isinstance(section.get("rows"), list) or not section["rows"]:
            return 100, f"The parameter {where}['rows'] is required."
        problem = _text(section.get("title"), f"{where}['title']", ROW_TITLE_MAX, required=len(sections) > 1)
        if problem:
            return problem
        for r, row in enumerate(section["rows"]):
            at = f"{where}['rows'][{r}]"
            if not isinstance(row, dict):
                return 100, f"Param {at} must be an object."
            problem = (_text(row.get("id"), f"{at}['id']", ROW_ID_MAX)
                       or _text(row.get("title"), f"{at}['title']", ROW_TITLE_MAX)
                       or _text(row.get("description"), f"{at}['description']", ROW_DESCRIPTION_MAX, required=False))
            if problem:
                return problem
            if row["id"] in ids:
                return 131009, "Row ids must be unique across the list."
            ids.add(row["id"])
    if len(ids) > ROWS_MAX:
        return 131009, f"A list message has at most {ROWS_MAX} rows in all."
    return None


def check_template(template: Any, known: list[dict[str, Any]]) -> tuple[int, int, str] | None:
    """A template send, against the WABA's templates: None, or (http status, code, details)."""
    if not isinstance(template, dict):
        return 400, 100, "The parameter template is required."
    name = template.get("name")
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(name, str) or not name:
        return 400, 100, "The parameter template['name'] is required."
    if not isinstance(code, str) or not code:
        return 400, 100, "The parameter template['language']['code'] is required."
    components = template.get("components", [])
    if not isinstance(components, list):
        return 400, 100, "Param template['components'] must be a list."
    sent: dict[str, list[Any]] = {}
    for i, component in enumerate(components):
        where = f"template['components'][{i}]"
        if not isinstance(component, dict) or component.get("type") not in ("header", "body", "button"):
            return 400, 100, f"Param {where}['type'] must be one of {{header, body, button}}."
        parameters = component.get("parameters", [])
        if not isinstance(parameters, list):
            return 400, 100, f"Param {where}['parameters'] must be a list."
        for p, parameter in enumerate(parameters):
            if not isinstance(parameter, dict) or not isinstance(parameter.get("type"), str):
                return 400, 100, f"The parameter {where}['parameters'][{p}]['type'] is required."
            if parameter["type"] == "text" and (not isinstance(parameter.get("text"), str) or not parameter["text"]):
                return 400, 100, f"The parameter {where}['parameters'][{p}]['text'] is required."
        sent.setdefault(component["type"], []).extend(parameters)
    match = next((t for t in known if t.get("name") == name and t.get("language") == code), None)
    if match is None or match.get("status") not in ("APPROVED", "PAUSED", "DISABLED"):
        return 404, 132001, f"template name ({name}) does not exist in {code}"
    if match["status"] == "PAUSED":
        return 400, 132015, f"Template {name} is paused because of low quality."
    if match["status"] == "DISABLED":
        return 400, 132016, f"Template {name} was disabled because of low quality."
    for component in match.get("components", []):
        kind = str(component.get("type", "")).lower()
        if kind in ("header", "body") and component.get("text"):
            expected = len(set(PLACEHOLDER.findall(component["text"])))
            if len(sent.get(kind, [])) != expected:
                return 400, 132000, (f"Number of parameters does not match the expected number of params "
                                     f"({kind}: expected {expected}, got {len(sent.get(kind, []))})")
    return None
