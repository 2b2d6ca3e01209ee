"""What the suite counts as a customer's number reaching OpenAI.

Written apart from bot/ai/privacy.py on purpose, so that a gap there is not copied here: the text is
flattened (NFKC, every script's digits to 0-9, separators and invisible characters removed) and any
run of the number's last 7 or more digits in it is a leak. Every such run ends with the last 7
digits, so looking for those is enough.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable
from typing import Any

from tests.fakes.base import RecordedRequest, parse_json, parse_multipart

TAIL = 7
# Joins the segments of a request: neither a digit nor a separator, so two segments never run into one number.
JOINER = "\u00a4"
# The separators the security review listed, besides every space, dash, format and combining character.
SEPARATORS = " \t\n\r\f\v-./()_,*:·\u00a0\u2013\u2011\u2212\u200b\u2060\u00ad\ufeff;|#~\u30fc\u0640"
_REMOVED_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Pd", "Mn", "Me"})
# Digits, spaces, dashes and marks all live in planes 0-2; plane 14 holds tags and variation selectors.
_PLANES = (range(0x0000, 0x30000), range(0xE0000, 0xE1000))


@functools.cache
def _table() -> dict[int, str | None]:
    table: dict[int, str | None] = {ord(ch): None for ch in SEPARATORS}
    for plane in _PLANES:
        for code in plane:
            ch = chr(code)
            value = unicodedata.digit(ch, None)
            if value is not None:
                if not "0" <= ch <= "9":
                    table[code] = str(value)
            elif unicodedata.category(ch) in _REMOVED_CATEGORIES:
                table[code] = None
    return table


def flatten(text: str) -> str:
    """The text with every digit as 0-9 and nothing left between digits that a reader would skip."""
    return unicodedata.normalize("NFKC", text).translate(_table())


def leaked(text: str, numbers: Iterable[str]) -> list[str]:
    """The numbers of which a run of 7 or more trailing digits appears in the text, in any form."""
    flat = flatten(text)
    return [n for n in numbers if len(n) >= TAIL and n[-TAIL:] in flat]


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        if not value.startswith("data:"):  # base64 pictures: digit runs there are not numbers
            out.append(value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        out.append(str(value))
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, out)


def request_texts(requests: Iterable[RecordedRequest]) -> str:
    """Everything a person could read in these requests: URL, headers, JSON strings and numbers, and
    form fields (uploaded files excepted: PDFs and voice notes are bytes, not text), one per segment.

    JSON is decoded first, so an escaped \\u0033 or \\n is what the model would read; segments are
    joined with a character that is not a separator, so two values never run into one number.
    """
    parts: list[str] = []
    for rec in requests:
        parts.append(rec.path_qs)
        # Every header but the API key, whose random characters are no one's phone number.
        parts.extend(v for k, v in rec.headers.items() if k.lower() != "authorization")
        parsed = parse_json(rec.body)
        content_type = rec.header("Content-Type") or ""
        if parsed is not None:
            _strings(parsed, parts)
        elif content_type.startswith("multipart/form-data"):
            parts.extend(p.text for p in parse_multipart(content_type, rec.body).values() if p.filename is None)
        elif rec.body:
            parts.append(rec.body.decode("utf-8", errors="replace"))
    return JOINER.join(parts)
