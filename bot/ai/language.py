"""Language detection with langdetect, seeded for determinism and ignoring texts too short to judge."""

from __future__ import annotations

import re

from langdetect import DetectorFactory, LangDetectException, detect_langs

# langdetect is random by default; a fixed seed makes the same text give the same answer.
DetectorFactory.seed = 0

MIN_LETTERS = 12
MIN_CONFIDENCE = 0.80
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


def detect_language(text: str | None) -> str | None:
    """The ISO code of the text's language, or None when there are too few letters or doubt."""
    if not text:
        return None
    letters = _LETTER.findall(text)
    if len(letters) < MIN_LETTERS:
        return None
    try:
        candidates = detect_langs(text)
    except LangDetectException:
        return None
    if not candidates:
        return None
    best = candidates[0]
    if best.prob < MIN_CONFIDENCE:
        return None
    return str(best.lang)
