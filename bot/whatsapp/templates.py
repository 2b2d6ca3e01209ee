"""The WABA's message templates: one full sync from the Graph API, status updates from webhooks,
and the `components` of a send with its text preview.

Templates are how the business writes first, or after the 24-hour window. A send fills the BODY's
variables (`{{1}}`, `{{2}}`… or, for templates with named parameters, `{{first_name}}`…) from
`parameters`, in order of appearance. Templates whose header or buttons take variables, or whose
header is a picture or a document, need more than `parameters` and are refused with a clear error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from bot.whatsapp.events import TemplateStatusUpdate

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
BODY_MAX = 1024
# Meta refuses body parameters with a newline or a tab or more than 4 spaces in a row (error 132018).
_BAD_PARAMETER = re.compile(r"[\n\t]| {5,}")
# A status update's event, as the status the template then has.
EVENT_STATUS = {"REINSTATED": "APPROVED"}


class TemplateError(ValueError):
    """A template cannot be sent as asked; the message says why and what to do instead."""


class TemplateSyncError(RuntimeError):
    """The templates cannot be synced with this configuration; the message names the setting to fix."""


@dataclass(frozen=True, slots=True)
class Template:
    """One template as the Graph API lists it, with what a send needs worked out."""

    name: str
    language: str
    status: str
    category: str | None
    body_text: str | None
    parameter_count: int
    components_json: str
    template_id: str | None = None


class TemplateView(Protocol):
    """What building a send needs of a template: a synced `Template` or a stored row both have it."""

    @property
    def name(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def body_text(self) -> str | None: ...
    @property
    def components_json(self) -> str: ...


class TemplateSource(Protocol):
    """The Graph API's template list (WhatsAppClient)."""

    @property
    def configured(self) -> bool:
        """Whether an access token is set."""
        ...

    async def list_templates(self, waba_id: str) -> list[dict[str, Any]]:
        """Every template of the WABA, all pages."""
        ...


class TemplateStore(Protocol):
    """Where templates are kept (bot.persistence.templates.TemplateRepo)."""

    async def replace_all(self, waba_id: str, templates: Sequence[Template]) -> int:
        """Make these the WABA's whole set."""
        ...

    async def apply_status(self, *, waba_id: str | None, template_id: str | None, name: str | None,
                           language: str | None, status: str, reason: str | None) -> bool:
        """Set one template's status; False when it is not known."""
        ...


@dataclass(frozen=True, slots=True)
class PreparedTemplate:
    """A template send, ready for WhatsAppClient.send_template, and the text the customer will read."""

    name: str
    language: str
    components: list[dict[str, Any]]
    preview: str


def placeholders(text: str | None) -> list[str]:
    """The distinct variables of a template text, in order of appearance: ['1', '2'] or ['first_name']."""
    found: list[str] = []
    for match in PLACEHOLDER.finditer(text or ""):
        if match.group(1) not in found:
            found.append(match.group(1))
    return found


def _components(template: TemplateView) -> list[dict[str, Any]]:
    try:
        parsed = orjson.loads(template.components_json)
    except orjson.JSONDecodeError:
        return []
    return [c for c in parsed if isinstance(c, dict)] if isinstance(parsed, list) else []


def _component(components: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next((c for c in components if str(c.get("type", "")).upper() == kind), {})


def template_from_graph(item: dict[str, Any]) -> Template | None:
    """A `data[]` item of GET /{waba-id}/message_templates; None for one without a name or language."""
    name, language = item.get("name"), item.get("language")
    if not isinstance(name, str) or not name or not isinstance(language, str) or not language:
        return None
    raw = item.get("components")
    components = [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
    body = _component(components, "BODY").get("text")
    body_text = body if isinstance(body, str) else None
    status, category, ident = item.get("status"), item.get("category"), item.get("id")
    return Template(
        name=name,
        language=language,
        status=status.upper() if isinstance(status, str) and status else "UNKNOWN",
        category=category if isinstance(category, str) else None,
        body_text=body_text,
        parameter_count=len(variables(body_text)),
        components_json=orjson.dumps(components).decode(),
        template_id=str(ident) if isinstance(ident, str | int) and not isinstance(ident, bool) else None,
    )


async def sync(*, source: TemplateSource, store: TemplateStore, waba_id: str) -> int:
    """One full sync: fetch every template of the WABA and make them the stored set; returns how many.

    Raises TemplateSyncError when WHATSAPP_BUSINESS_ACCOUNT_ID or WHATSAPP_ACCESS_TOKEN is missing,
    and GraphError (with `retryable`) when the Graph API refuses or cannot be reached; the stored set is
    then left as it was.
    """
    waba = waba_id.strip()
    if not waba:
        raise TemplateSyncError(
            "WHATSAPP_BUSINESS_ACCOUNT_ID is not set: set it to the WhatsApp Business Account id "
            "(Meta Business Suite → WhatsApp accounts, or the `entry[].id` of any webhook) to sync templates"
        )
    if not waba.isdigit():
        raise TemplateSyncError("WHATSAPP_BUSINESS_ACCOUNT_ID must be the numeric WhatsApp Business Account id")
    if not source.configured:
        raise TemplateSyncError("WHATSAPP_ACCESS_TOKEN is not set: templates cannot be fetched without it")
    templates: dict[tuple[str, str], Template] = {}
    for item in await source.list_templates(waba):
        template = template_from_graph(item)
        if template is not None:
            templates.setdefault((template.name, template.language), template)
    return await store.replace_all(waba, list(templates.values()))


async def apply_status_update(store: TemplateStore, update: TemplateStatusUpdate) -> bool:
    """Record a message_template_status_update; False when the template is not synced yet (sync then)."""
    return await store.apply_status(
        waba_id=update.waba_id,
        template_id=update.template_id,
        name=update.name,
        language=update.language,
        status=EVENT_STATUS.get(update.event, update.event),
        reason=update.reason,
    )


def _check_shape(template: TemplateView, components: list[dict[str, Any]]) -> None:
    header = _component(components, "HEADER")
    if header and str(header.get("format", "TEXT")).upper() != "TEXT":
        raise TemplateError(f"template {template.name} has a {str(header.get('format')).lower()} header, "
                            "which sending with text parameters alone does not support")
    if placeholders(header.get("text") if isinstance(header.get("text"), str) else None):
        raise TemplateError(f"template {template.name} has variables in its header, which sending with "
                            "body parameters alone does not support")
    buttons = _component(components, "BUTTONS").get("buttons")
    for button in buttons if isinstance(buttons, list) else []:
        if isinstance(button, dict) and placeholders(str(button.get("url", ""))):
            raise TemplateError(f"template {template.name} has a button with a variable URL, which sending "
                                "with body parameters alone does not support")


def variables(text: str | None) -> list[str]:
    """The variables `parameters` fill, in their order: {{1}}, {{2}}… by number, named ones as they appear."""
    names = placeholders(text)
    return sorted(names, key=int) if all(name.isdigit() for name in names) else names


def _parameters(template: TemplateView, parameters: Sequence[Any]) -> list[str]:
    names = variables(template.body_text)
    if len(parameters) != len(names):
        raise TemplateError(f"template {template.name} ({template.language}) takes {len(names)} "
                            f"parameter{'s' if len(names) != 1 else ''}, got {len(parameters)}")
    values: list[str] = []
    for index, value in enumerate(parameters, start=1):
        text = value.strip() if isinstance(value, str) else ""
        if not text:
            raise TemplateError(f"parameter {index} of template {template.name} must be non-empty text")
        if _BAD_PARAMETER.search(text):
            raise TemplateError(f"parameter {index} of template {template.name} may not contain a newline, "
                                "a tab or more than four spaces in a row")
        values.append(text)
    return values


def _filled_body(template: TemplateView, values: list[str]) -> str:
    mapping = dict(zip(variables(template.body_text), values, strict=True))
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(1), m.group(0)), template.body_text or "")


def build_components(template: TemplateView, parameters: Sequence[Any]) -> list[dict[str, Any]]:
    """The `components` of a send that fills the body's variables; TemplateError on a wrong count or value."""
    _check_shape(template, _components(template))
    values = _parameters(template, parameters)
    if not values:
        return []
    names = variables(template.body_text)
    if all(name.isdigit() for name in names):
        fields: list[dict[str, Any]] = [{"type": "text", "text": v} for v in values]
    else:  # templates created with parameter_format NAMED send each value with its name
        fields = [{"type": "text", "parameter_name": n, "text": v} for n, v in zip(names, values, strict=True)]
    return [{"type": "body", "parameters": fields}]


def preview(template: TemplateView, parameters: Sequence[Any]) -> str:
    """The text the customer will read: header, body with the parameters filled in, and footer."""
    components = _components(template)
    body = _filled_body(template, _parameters(template, parameters))
    parts = [_component(components, "HEADER").get("text"), body, _component(components, "FOOTER").get("text")]
    return "\n\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def prepare_send(template: TemplateView, parameters: Sequence[Any]) -> PreparedTemplate:
    """Everything a template send needs, checked: approved, the right parameters, a body within 1024 chars."""
    if template.status != "APPROVED":
        raise TemplateError(f"template {template.name} ({template.language}) is {template.status}: only "
                            "APPROVED templates can be sent; check it in WhatsApp Manager, then sync")
    components = build_components(template, parameters)
    body = _filled_body(template, _parameters(template, parameters))
    if len(body) > BODY_MAX:
        raise TemplateError(f"template {template.name} with these parameters is {len(body)} characters "
                            f"long; WhatsApp allows {BODY_MAX}")
    return PreparedTemplate(template.name, template.language, components, preview(template, parameters))
