"""The server's own fixed texts (not written by the model), in the supported languages."""

from __future__ import annotations

SUPPORTED_LANGUAGES = ("it", "en", "es", "fr", "de")
DEFAULT_LANGUAGE = "en"

TEXTS: dict[str, dict[str, str]] = {
    "fallback": {
        "it": "Scusa, non riesco a risponderti in questo momento. Una persona del nostro team ti risponderà "
              "al più presto.",
        "en": "Sorry, I can't answer right now. A person from our team will get back to you soon.",
        "es": "Lo siento, ahora no puedo responder. Una persona de nuestro equipo te contestará pronto.",
        "fr": "Désolé, je ne peux pas répondre pour le moment. Une personne de notre équipe vous répondra "
              "bientôt.",
        "de": "Entschuldigung, ich kann gerade nicht antworten. Jemand aus unserem Team meldet sich bald.",
    },
    "unsupported": {
        "it": "Grazie! Per ora posso leggere solo messaggi di testo: potresti scrivermi la tua richiesta?",
        "en": "Thanks! For now I can only read text messages: could you write your request?",
        "es": "¡Gracias! Por ahora solo puedo leer mensajes de texto: ¿podrías escribir tu consulta?",
        "fr": "Merci ! Pour l'instant je ne lis que les messages texte : pouvez-vous écrire votre demande ?",
        "de": "Danke! Im Moment kann ich nur Textnachrichten lesen: Könnten Sie Ihr Anliegen schreiben?",
    },
    "media_failed": {
        "it": "Non sono riuscito ad aprire il file che mi hai mandato. Puoi riprovare o descrivermelo a parole?",
        "en": "I couldn't open the file you sent. Could you try again or describe it in words?",
        "es": "No pude abrir el archivo que enviaste. ¿Puedes intentarlo de nuevo o describirlo con palabras?",
        "fr": "Je n'ai pas pu ouvrir le fichier envoyé. Pouvez-vous réessayer ou le décrire avec des mots ?",
        "de": "Ich konnte die gesendete Datei nicht öffnen. Bitte erneut senden oder in Worten beschreiben.",
    },
    "handoff": {
        "it": "Ho avvisato il nostro team: una persona ti risponderà qui al più presto.",
        "en": "I've let our team know: a person will answer you here as soon as possible.",
        "es": "He avisado a nuestro equipo: una persona te responderá aquí lo antes posible.",
        "fr": "J'ai prévenu notre équipe : une personne vous répondra ici dès que possible.",
        "de": "Ich habe unser Team informiert: Eine Person antwortet Ihnen hier so bald wie möglich.",
    },
    # The hand-off and the rate-limit notice when opening hours are set: {when} is "tomorrow from 9:00".
    "handoff_when": {
        "it": "Ho avvisato il nostro team: una persona ti risponderà qui {when}.",
        "en": "I've let our team know: a person will answer you here {when}.",
        "es": "He avisado a nuestro equipo: una persona te responderá aquí {when}.",
        "fr": "J'ai prévenu notre équipe : une personne vous répondra ici {when}.",
        "de": "Ich habe unser Team informiert: Eine Person antwortet Ihnen hier {when}.",
    },
    "rate_limited": {
        "it": "Grazie per i tuoi messaggi! Li abbiamo ricevuti tutti: una persona del nostro team ti risponderà "
              "al più presto.",
        "en": "Thank you for your messages! We have received them all: a person from our team will answer you "
              "as soon as possible.",
        "es": "¡Gracias por tus mensajes! Los hemos recibido todos: una persona de nuestro equipo te responderá "
              "lo antes posible.",
        "fr": "Merci pour vos messages ! Nous les avons tous reçus : une personne de notre équipe vous répondra "
              "dès que possible.",
        "de": "Danke für Ihre Nachrichten! Wir haben alle erhalten: Jemand aus unserem Team antwortet Ihnen so "
              "bald wie möglich.",
    },
    "rate_limited_when": {
        "it": "Grazie per i tuoi messaggi! Li abbiamo ricevuti tutti: una persona del nostro team ti risponderà "
              "{when}.",
        "en": "Thank you for your messages! We have received them all: a person from our team will answer you "
              "{when}.",
        "es": "¡Gracias por tus mensajes! Los hemos recibido todos: una persona de nuestro equipo te responderá "
              "{when}.",
        "fr": "Merci pour vos messages ! Nous les avons tous reçus : une personne de notre équipe vous répondra "
              "{when}.",
        "de": "Danke für Ihre Nachrichten! Wir haben alle erhalten: Jemand aus unserem Team antwortet Ihnen {when}.",
    },
    "order_confirmed": {
        "it": "Grazie! Il tuo ordine {order} è confermato. Totale: {total}.",
        "en": "Thank you! Your order {order} is confirmed. Total: {total}.",
        "es": "¡Gracias! Tu pedido {order} está confirmado. Total: {total}.",
        "fr": "Merci ! Votre commande {order} est confirmée. Total : {total}.",
        "de": "Danke! Ihre Bestellung {order} ist bestätigt. Summe: {total}.",
    },
}


def plural(count: int, singular: str, many: str | None = None) -> str:
    """A count with its English noun: "1 page", "3 pages" (`many` for irregular plurals)."""
    return f"{count} {singular if count == 1 else many or singular + 's'}"


def text(key: str, language: str | None, **values: str) -> str:
    """A fixed text in the customer's language, falling back to English."""
    variants = TEXTS[key]
    lang = (language or DEFAULT_LANGUAGE).split("-")[0].lower()
    template = variants.get(lang) or variants[DEFAULT_LANGUAGE]
    return template.format(**values) if values else template
