"""The one redaction step for everything bound for OpenAI, and masking for logs.

A number is the same number to a person (and to a model) whatever script or separators it is written
in: ３３３１２３４５６７, ٣٣٣١٢٣٤٥٦٧, 333–123–4567, 333\u200b1234567 or just 1234567. So the text is folded first
(NFKC, every script's digits to 0-9, dashes and invisible characters to one separator), the number is
found in the folded text, and the matching spans are masked in the original text: an index map leads
from folded positions back to original ones, since NFKC can turn one character into several.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

PHONE_MASK = "[phone number removed]"
# The shortest tail of a customer's number that is still theirs: 7 digits (a local number).
MIN_TAIL = 7

Redactor = Callable[[str], str]

# Characters that may stand between the digits of a number once folded: ASCII whitespace and control
# characters, and the punctuation people and apps put in numbers. Every other separator is folded
# into a plain space first (see _FOLDED_SEPARATOR).
_ASCII_SEPARATORS = r"\x00-\x20\x7f\-./()\[\]_,*:';|#~"
# Unicode categories folded into a separator: spaces, line and paragraph separators, control and
# format characters (soft hyphen, zero-width space/joiners, LRM/RLM, word joiner, invisible
# operators, BOM), dashes, and combining marks (a stroke or accent drawn over a digit).
_SEPARATOR_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Pd", "Mn", "Me"})
# ... and separators of other categories: minus signs, middle dots and bullets, Arabic separators.
_EXTRA_SEPARATORS = frozenset(
    "\u2212\u02d7\u00b7\u2027\u2022\u2219\u22c5\u2e31\u30fb\uff65\u2043\u066b\u066c\u060c\u3001\uff64"
    "\u30fc\u0640"  # the katakana long mark and the Arabic tatweel, drawn as a line between digits
)
_FOLDED_SEPARATOR = " "
# A run of digits with separators between them. (It starts at a digit, which lets the regex engine
# skip ahead; a + written before it is looked for only when a run is long enough to matter.)
_DIGIT_RUN = re.compile(rf"[0-9](?:[{_ASCII_SEPARATORS}]*[0-9])*")
_ONLY_SEPARATORS = re.compile(rf"[{_ASCII_SEPARATORS}]*")
_NOT_DIGIT = re.compile(r"[^0-9]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _fold_char(ch: str) -> str:
    """One non-ASCII character folded: NFKC, digits of every script to 0-9, separators to a space."""
    out: list[str] = []
    for c in unicodedata.normalize("NFKC", ch):
        value = unicodedata.digit(c, None)
        if value is not None:
            out.append(str(value))
        elif c.isascii():
            out.append(c)
        elif unicodedata.category(c) in _SEPARATOR_CATEGORIES or c in _EXTRA_SEPARATORS:
            out.append(_FOLDED_SEPARATOR)
        else:
            out.append(c)
    return "".join(out) or _FOLDED_SEPARATOR


_FOLD_TABLE_MAX = 50_000


class _FoldTable(dict[int, str]):
    """A str.translate table filled on first sight of each character (a fixed table would need
    every Unicode code point up front)."""

    def __missing__(self, code: int) -> str:
        if len(self) >= _FOLD_TABLE_MAX:
            self.clear()  # someone is sending every character there is: start again
        folded = self[code] = chr(code) if code < 0x80 else _fold_char(chr(code))
        return folded


_FOLD_TABLE = _FoldTable()


def fold(text: str) -> tuple[str, list[int] | None]:
    """The text as matching sees it, and for each of its characters the index of the original one.

    The map is None when positions are unchanged (always for ASCII text, the common case).
    """
    if text.isascii():
        return text, None
    table = _FOLD_TABLE
    if all(table[ord(ch)] == ch for ch in set(_NON_ASCII.findall(text))):
        return text, None  # accents and other scripts' letters, but no digits or separators among them
    folded = text.translate(table)
    if len(folded) == len(text):
        return folded, None
    # Some character became several (NFKC: ㉝ is 33, ½ is 1⁄2): map each back to its original.
    parts = [table[ord(ch)] for ch in text]
    return folded, [i for i, part in enumerate(parts) for _ in part]


def _digits(number: str) -> str:
    folded, _ = fold(number)
    return _NOT_DIGIT.sub("", folded)


def mask_phone(number: str | None) -> str:
    """A log-safe form: +39******4567 (country part and last four digits only)."""
    if not number:
        return "-"
    digits = _digits(number)
    if len(digits) <= 6:
        return "*" * len(digits)
    return f"+{digits[:2]}{'*' * (len(digits) - 6)}{digits[-4:]}"


def _runs(folded: str) -> Iterable[tuple[str, list[int]]]:
    """Each run of 7 or more digits: its digits, and their positions (the + first, when written)."""
    if sum(map(folded.count, "0123456789")) < MIN_TAIL:
        return  # most messages: too few digits to hold a number at all
    for match in _DIGIT_RUN.finditer(folded):
        run = match.group()
        if len(run) < MIN_TAIL:
            continue
        start = match.start()
        positions = [start + i for i, ch in enumerate(run) if "0" <= ch <= "9"]
        if len(positions) < MIN_TAIL:
            continue
        plus = folded.rfind("+", max(0, start - 20), start)
        if plus >= 0 and _ONLY_SEPARATORS.fullmatch(folded, plus + 1, start):
            run = folded[plus:start] + run
            positions.insert(0, plus)
        yield run, positions


def _number_spans(digits: str, run_digits: str, positions: list[int]) -> Iterable[tuple[int, int]]:
    """Where `digits` (a customer's number) or a tail of 7+ of its digits occurs in a run's digits.

    Yields [start, end) indexes into `run_digits`, whose digits stand at `positions` of the text (so
    a gap between two positions is a separator, and the digit after it begins a group). Of
    overlapping occurrences the last is taken: a number ends where its digits end. A match that
    holds the national part (the number without a 1-3 digit country code) also takes a trunk 0 that
    begins a group (0333..., (0) 333...), a country code before that (+44 (0) 7911...), and an
    international 00 prefix.
    """

    def group_start(i: int) -> bool:
        return i == 0 or positions[i] - positions[i - 1] > 1

    tail = digits[-MIN_TAIL:]
    n = len(digits)
    at = run_digits.find(tail)
    while at >= 0:
        while 0 <= (later := run_digits.find(tail, at + 1)) < at + MIN_TAIL:
            at = later
        end = at + MIN_TAIL
        start = at
        while start > 0 and end - start < n and run_digits[start - 1] == digits[n - (end - start) - 1]:
            start -= 1
        if end - start >= n - 3:
            country = digits[: n - (end - start)]
            if country and start >= 1 and run_digits[start - 1] == "0" and group_start(start - 1):
                start -= 1
                before = start - len(country)
                if before >= 0 and run_digits[before:start] == country and group_start(before):
                    start = before
            if start >= 2 and run_digits[start - 2 : start] == "00" and group_start(start - 2):
                start -= 2
        yield start, end
        at = run_digits.find(tail, end)


def _spans(folded: str, numbers: tuple[str, ...]) -> list[tuple[int, int]]:
    """[start, end) spans of the folded text that hold one of the numbers (or a 7+ digit tail)."""
    spans: list[tuple[int, int]] = []
    for run, positions in _runs(folded):
        plus = run[0] == "+"
        digit_positions = positions[1:] if plus else positions
        run_digits = _NOT_DIGIT.sub("", run)
        for digits in numbers:
            for start, end in _number_spans(digits, run_digits, digit_positions):
                first = positions[0] if plus and start == 0 else digit_positions[start]
                spans.append((first, digit_positions[end - 1] + 1))
    return spans


def _mask_spans(text: str, index: list[int] | None, spans: list[tuple[int, int]],
                replacement: Callable[[str], str]) -> str:
    """The original text with each span (in folded positions) replaced; overlapping spans merge."""
    if index is not None:
        spans = [(index[start], index[end - 1] + 1) for start, end in spans]
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    out: list[str] = []
    last = 0
    for start, end in merged:
        out.append(text[last:start])
        out.append(replacement(text[start:end]))
        last = end
    out.append(text[last:])
    return "".join(out)


def make_redactor(numbers: Iterable[str | None]) -> Redactor:
    """Build (or reuse) a redactor that masks the given phone numbers in any script and written format."""
    return _cached_redactor(tuple(sorted({n for n in numbers if n})))


@functools.lru_cache(maxsize=4096)
def _cached_redactor(numbers: tuple[str, ...]) -> Redactor:
    # A conversation reuses its own redactor turn after turn.
    return _build_redactor(numbers)


def _build_redactor(numbers: Iterable[str]) -> Redactor:
    """Build a redactor that masks the given phone numbers, however they are written.

    +39 333 123 4567, 0039-333-1234567, (333) 123 4567, 03331234567, ３３３１２３４５６７, ٣٣٣١٢٣٤٥٦٧,
    333·123·4567 and the last seven or more digits alone (1234567) are all the customer's number.
    Numbers shorter than seven digits are not phone numbers and are ignored.
    """
    targets = tuple(sorted({d for d in (_digits(n) for n in numbers) if len(d) >= MIN_TAIL}))
    if not targets:
        return lambda text: text

    def redact(text: str) -> str:
        if not text:
            return text
        folded, index = fold(text)
        spans = _spans(folded, targets)
        if not spans:
            return text
        return _mask_spans(text, index, spans, lambda _: PHONE_MASK)

    return redact


def mask_numbers(text: str) -> str:
    """For logs and error records: every run of 7 or more digits, in any script, masked like mask_phone."""
    if not text:
        return text
    folded, index = fold(text)
    spans = [(positions[0], positions[-1] + 1) for _, positions in _runs(folded)]
    if not spans:
        return text
    return _mask_spans(text, index, spans, mask_phone)


def redact_deep(value: Any, redact: Redactor) -> Any:
    """Apply a redactor to every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_deep(v, redact) for v in value]
    if isinstance(value, dict):
        # Image data URLs are base64: a digit run inside them is not a phone number, and masking it
        # would corrupt the picture.
        return {k: v if k == "image_url" else redact_deep(v, redact) for k, v in value.items()}
    return value
