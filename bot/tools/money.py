"""Prices as integer cents: parsing what a shop owner types, and showing amounts to customers."""

from __future__ import annotations

import re

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
# Languages that write "12,50 €" rather than "€12.50".
_COMMA_LANGUAGES = {"it", "es", "fr", "de", "pt", "nl"}
_AMOUNT = re.compile(r"^\d{1,9}(?:[.,]\d{1,2})?$")


class PriceError(ValueError):
    """A price that cannot be read; the message says what was expected."""


def parse_price(raw: str) -> int:
    """'12.50', '12,50' or '12' → 1250 cents; no thousands separators, never negative."""
    text = raw.strip().replace(" ", "")
    if not _AMOUNT.match(text):
        raise PriceError(f"price {raw!r} is not a number like 12.50")
    whole, _, fraction = text.replace(",", ".").partition(".")
    return int(whole) * 100 + int((fraction + "00")[:2])


def format_price(cents: int, currency: str, language: str | None = None) -> str:
    """A price as a customer reads it: '€12.50' in English, '12,50 €' in Italian, '12.50 CHF' otherwise."""
    amount = f"{cents // 100:,}.{cents % 100:02d}"
    lang = (language or "en").split("-")[0].lower()
    symbol = SYMBOLS.get(currency.upper())
    if lang in _COMMA_LANGUAGES:
        thousands = " " if lang == "fr" else "."
        amount = amount.replace(",", "\0").replace(".", ",").replace("\0", thousands)
        return f"{amount} {symbol or currency.upper()}"
    if symbol is None:
        return f"{amount} {currency.upper()}"
    return f"{symbol}{amount}"
