"""The public order confirmation page: a one-time link the assistant sends the customer on WhatsApp."""

from __future__ import annotations

import hmac
import re
import secrets
import time
from typing import Any

import jinja2
import structlog
from aiohttp import web

from bot.actors.takeover import Takeover
from bot.persistence.crm import Confirmation, Order, contact_key
from bot.texts import SUPPORTED_LANGUAGES
from bot.texts import text as fixed_text
from bot.tools.money import format_price
from bot.tools.orders import CONFIRMATION_HOURS, token_hash
from bot.web.keys import CONFIG, REPOS, TAKEOVER

log = structlog.get_logger("bot.web.orders")

routes = web.RouteTableDef()

CSRF_COOKIE = "order_csrf"
CSRF_FIELD = "csrf"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")

# Configured once and only read afterwards; autoescape because order lines hold product names
# that came from a CSV file.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("bot.web", "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

PAGE_TEXTS: dict[str, dict[str, str]] = {
    "title": {"it": "Conferma ordine", "en": "Confirm your order", "es": "Confirmar pedido",
              "fr": "Confirmer la commande", "de": "Bestellung bestätigen"},
    "intro": {"it": "Controlla il tuo ordine e premi Conferma.", "en": "Check your order and press Confirm.",
              "es": "Revisa tu pedido y pulsa Confirmar.", "fr": "Vérifiez votre commande et appuyez sur Confirmer.",
              "de": "Prüfen Sie Ihre Bestellung und tippen Sie auf Bestätigen."},
    "product": {"it": "Prodotto", "en": "Product", "es": "Producto", "fr": "Produit", "de": "Artikel"},
    "quantity": {"it": "Qtà", "en": "Qty", "es": "Cant.", "fr": "Qté", "de": "Menge"},
    "amount": {"it": "Importo", "en": "Amount", "es": "Importe", "fr": "Montant", "de": "Betrag"},
    "total": {"it": "Totale", "en": "Total", "es": "Total", "fr": "Total", "de": "Summe"},
    "notes": {"it": "Note", "en": "Notes", "es": "Notas", "fr": "Remarques", "de": "Anmerkungen"},
    "confirm": {"it": "Conferma l'ordine", "en": "Confirm the order", "es": "Confirmar el pedido",
                "fr": "Confirmer la commande", "de": "Bestellung bestätigen"},
    "confirmed": {"it": "Grazie! Il tuo ordine è confermato. Ti abbiamo scritto anche su WhatsApp.",
                  "en": "Thank you! Your order is confirmed. We have also written to you on WhatsApp.",
                  "es": "¡Gracias! Tu pedido está confirmado. También te hemos escrito por WhatsApp.",
                  "fr": "Merci ! Votre commande est confirmée. Nous vous avons aussi écrit sur WhatsApp.",
                  "de": "Danke! Ihre Bestellung ist bestätigt. Wir haben Ihnen auch auf WhatsApp geschrieben."},
    "already_confirmed": {"it": "Questo ordine è già stato confermato: non serve fare altro.",
                          "en": "This order is already confirmed: there is nothing more to do.",
                          "es": "Este pedido ya está confirmado: no hace falta hacer nada más.",
                          "fr": "Cette commande est déjà confirmée : il n'y a rien d'autre à faire.",
                          "de": "Diese Bestellung ist bereits bestätigt: Sie müssen nichts weiter tun."},
    "expired": {"it": "Questo link è scaduto. Scrivici su WhatsApp e te ne mandiamo uno nuovo.",
                "en": "This link has expired. Write to us on WhatsApp and we will send you a new one.",
                "es": "Este enlace ha caducado. Escríbenos por WhatsApp y te enviaremos uno nuevo.",
                "fr": "Ce lien a expiré. Écrivez-nous sur WhatsApp et nous vous en enverrons un nouveau.",
                "de": "Dieser Link ist abgelaufen. Schreiben Sie uns auf WhatsApp, wir senden Ihnen einen neuen."},
    "cancelled": {"it": "Questo ordine è stato annullato. Scrivici su WhatsApp se vuoi ordinare di nuovo.",
                  "en": "This order was cancelled. Write to us on WhatsApp if you would like to order again.",
                  "es": "Este pedido fue cancelado. Escríbenos por WhatsApp si quieres pedir de nuevo.",
                  "fr": "Cette commande a été annulée. Écrivez-nous sur WhatsApp pour commander à nouveau.",
                  "de": "Diese Bestellung wurde storniert. Schreiben Sie uns auf WhatsApp, um neu zu bestellen."},
    "unknown": {"it": "Questo link non è valido. Controlla di averlo copiato per intero, o scrivici su WhatsApp.",
                "en": "This link is not valid. Check that you copied all of it, or write to us on WhatsApp.",
                "es": "Este enlace no es válido. Comprueba que lo copiaste entero, o escríbenos por WhatsApp.",
                "fr": "Ce lien n'est pas valide. Vérifiez qu'il est complet, ou écrivez-nous sur WhatsApp.",
                "de": "Dieser Link ist ungültig. Prüfen Sie, ob er vollständig ist, oder schreiben Sie uns."},
    "unavailable": {"it": "Alcuni prodotti non sono più disponibili in questa quantità. Scrivici su WhatsApp "
                          "e sistemiamo l'ordine insieme.",
                    "en": "Some products are no longer available in this quantity. Write to us on WhatsApp and "
                          "we will sort the order out together.",
                    "es": "Algunos productos ya no están disponibles en esta cantidad. Escríbenos por WhatsApp "
                          "y lo arreglamos juntos.",
                    "fr": "Certains produits ne sont plus disponibles en cette quantité. Écrivez-nous sur "
                          "WhatsApp et nous arrangerons la commande ensemble.",
                    "de": "Einige Artikel sind in dieser Menge nicht mehr verfügbar. Schreiben Sie uns auf "
                          "WhatsApp, dann klären wir die Bestellung gemeinsam."},
    "csrf": {"it": "Non siamo riusciti a verificare la richiesta. Ricarica la pagina e premi di nuovo Conferma.",
             "en": "We could not verify the request. Reload the page and press Confirm again.",
             "es": "No pudimos verificar la solicitud. Recarga la página y pulsa Confirmar otra vez.",
             "fr": "Nous n'avons pas pu vérifier la demande. Rechargez la page et appuyez à nouveau sur Confirmer.",
             "de": "Die Anfrage konnte nicht geprüft werden. Laden Sie die Seite neu und tippen Sie erneut."},
    "valid_for": {"it": "Il link vale {hours} ore.", "en": "The link is valid for {hours} hours.",
                  "es": "El enlace es válido durante {hours} horas.", "fr": "Le lien est valable {hours} heures.",
                  "de": "Der Link ist {hours} Stunden gültig."},
}

# What each outcome looks like: HTTP status and the message key. 404 for a link we never made,
# 410 for one that existed but can no longer be used.
_OUTCOMES: dict[str, tuple[int, str]] = {
    "unknown": (404, "unknown"),
    "expired": (410, "expired"),
    "already_confirmed": (410, "already_confirmed"),
    "cancelled": (410, "cancelled"),
    "unavailable": (409, "unavailable"),
}


def _words(language: str) -> dict[str, str]:
    return {key: variants.get(language) or variants["en"] for key, variants in PAGE_TEXTS.items()}


def _accepted_language(request: web.Request) -> str:
    """The first supported language of the browser (used when the order's contact gives none)."""
    for part in request.headers.get("Accept-Language", "").split(","):
        code = part.split(";")[0].strip().split("-")[0].lower()
        if code in SUPPORTED_LANGUAGES:
            return code
    return "en"


async def _language(request: web.Request, order: Order | None) -> str:
    if order is not None:
        contact = await request.app[REPOS].contacts.get(order.contact_id)
        if contact is not None and contact.language:
            lang = contact.language.split("-")[0].lower()
            if lang in SUPPORTED_LANGUAGES:
                return lang
    return _accepted_language(request)


def _order_view(order: Order, language: str) -> dict[str, Any]:
    return {
        "code": order.code,
        "notes": order.notes,
        "total": format_price(order.total_cents, order.currency, language),
        "lines": [
            {
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": format_price(line.unit_price_cents, order.currency, language),
                "line_total": format_price(line.line_total_cents, order.currency, language),
            }
            for line in order.lines
        ],
    }


def _page(request: web.Request, *, status: int, language: str, state: str, message: str | None = None,
          order: Order | None = None, csrf: str | None = None, unavailable: tuple[str, ...] = ()) -> web.Response:
    words = _words(language)
    html = _TEMPLATES.get_template("order_confirm.html").render(
        lang=language,
        t=words,
        state=state,
        message=message,
        order=_order_view(order, language) if order is not None else None,
        csrf=csrf,
        csrf_field=CSRF_FIELD,
        unavailable=unavailable,
        valid_for=words["valid_for"].format(hours=CONFIRMATION_HOURS),
    )
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    # The token is in the URL: keep it out of caches, Referer headers and other sites' frames.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def _outcome(request: web.Request, result: Confirmation, language: str) -> web.Response:
    status, key = _OUTCOMES[result.state]
    words = _words(language)
    return _page(request, status=status, language=language, state=result.state, message=words[key],
                 order=result.order if result.state in ("already_confirmed", "unavailable") else None,
                 unavailable=result.unavailable)


def _token_hash(request: web.Request) -> str | None:
    token = request.match_info["token"]
    return token_hash(token) if _TOKEN.match(token) else None


@routes.get("/orders/confirm/{token}")
async def show(request: web.Request) -> web.Response:
    """The order with a Confirm button; sets the CSRF cookie that the form echoes back."""
    digest = _token_hash(request)
    if digest is None:
        return _page(request, status=404, language=_accepted_language(request), state="unknown",
                     message=_words(_accepted_language(request))["unknown"])
    result = await request.app[REPOS].orders.confirmation(digest, now=time.time())
    language = await _language(request, result.order)
    if result.state != "ready" or result.order is None:
        return _outcome(request, result, language)
    csrf = request.cookies.get(CSRF_COOKIE)
    if not csrf or not _TOKEN.match(csrf):
        csrf = secrets.token_urlsafe(32)
    response = _page(request, status=200, language=language, state="ready", order=result.order, csrf=csrf)
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=CONFIRMATION_HOURS * 3600,
        path="/orders/confirm/",
        httponly=True,
        samesite="Strict",
        secure=request.app[CONFIG].public_url.startswith("https://"),
    )
    return response


@routes.post("/orders/confirm/{token}")
async def confirm(request: web.Request) -> web.Response:
    """Confirm once (double-submit CSRF check first), then tell the customer on WhatsApp."""
    digest = _token_hash(request)
    if digest is None:
        language = _accepted_language(request)
        return _page(request, status=404, language=language, state="unknown", message=_words(language)["unknown"])
    form = await request.post()
    field = form.get(CSRF_FIELD)
    cookie = request.cookies.get(CSRF_COOKIE)
    if not isinstance(field, str) or not cookie or not hmac.compare_digest(field.encode(), cookie.encode()):
        log.warning("order_confirmation_csrf_refused")
        peek = await request.app[REPOS].orders.confirmation(digest, now=time.time())
        language = await _language(request, peek.order)
        return _page(request, status=403, language=language, state="csrf", message=_words(language)["csrf"])
    repos = request.app[REPOS]
    now = time.time()
    async with repos.db.transaction() as tx:
        result = await repos.orders.confirm(digest, now=now)
        contact = None
        if result.state == "confirmed" and result.order is not None:
            contact = await repos.contacts.get(result.order.contact_id)
            if contact is not None:
                # Queued in the same transaction as the confirmation: it is sent exactly when the order is
                # confirmed, even if the server stops right after this request.
                message = fixed_text(
                    "order_confirmed", contact.language, order=result.order.code,
                    total=format_price(result.order.total_cents, result.order.currency, contact.language),
                )
                await Takeover.queue_system_text(tx, contact_key(contact), message)
    language = await _language(request, result.order)
    if result.state != "confirmed" or result.order is None:
        return _outcome(request, result, language)
    log.info("order_confirmed", order=result.order.code, total_cents=result.order.total_cents)
    if contact is not None:
        request.app[TAKEOVER].wake(contact_key(contact))
    return _page(request, status=200, language=language, state="confirmed", message=_words(language)["confirmed"],
                 order=result.order)
