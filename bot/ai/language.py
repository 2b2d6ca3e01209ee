"""Language detection: the words customers write most, then langdetect's profiles, in well under a millisecond.

langdetect itself samples n-grams at random in seven trials until each converges: 2.4–8 ms a turn,
the largest single cost of a turn before this module (bench/README.md), and unreliable on the short
sentences customers write ("Hello, do you sell bread?" came out Spanish). So:

1. Common conversational words of the languages the server speaks (and Portuguese, its nearest
   neighbour) decide when they clearly point one way: a dictionary lookup per word.
2. Otherwise langdetect's own n-gram profiles score the text once, deterministically (the naive
   Bayes sum langdetect samples from), and only a clear margin counts.
Texts with too few letters are not judged at all: "ok", "grazie!" never change a conversation's language.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from langdetect import DetectorFactory
from langdetect import detector_factory as _ld
from langdetect.utils.ngram import NGram

MIN_LETTERS = 12
# Naive Bayes over n-grams: the best language must lead the second by this much per n-gram, over
# enough n-grams; measured on short shop conversations, below these the profiles guess.
MIN_MARGIN = 0.15
MIN_NGRAMS = 50
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

# Words that are frequent in customers' messages and rare in the other languages listed.
_LEXICON: dict[str, tuple[str, ...]] = {
    "en": ("hello", "hi", "thanks", "thank", "please", "you", "your", "the", "do", "does", "have", "what",
           "when", "where", "how", "is", "are", "can", "could", "would", "want", "need", "order", "my", "me",
           "with", "and", "of", "to", "it", "this", "that", "tomorrow", "today", "yes", "good", "morning"),
    "it": ("ciao", "buongiorno", "buonasera", "grazie", "prego", "vorrei", "avete", "sono", "per", "il",
           "della", "che", "non", "come", "quando", "dove", "quanto", "costa", "posso", "anche", "ancora",
           "domani", "oggi", "mio", "mia", "sapere", "gli", "questo", "questa", "siete", "perché", "buona"),
    "es": ("hola", "gracias", "quiero", "tienen", "tiene", "por", "favor", "el", "los", "las", "que", "como",
           "cuando", "donde", "cuánto", "cuanto", "puedo", "también", "mañana", "hoy", "mi", "usted", "pedido",
           "buenos", "días", "buenas", "una", "está", "estoy", "necesito"),
    "fr": ("bonjour", "bonsoir", "merci", "je", "vous", "voudrais", "avez", "est", "pour", "le", "les", "des",
           "une", "que", "comment", "quand", "où", "combien", "puis", "aussi", "demain", "aujourd", "mon", "ma",
           "commande", "oui", "avec", "pas", "dans", "sur", "votre"),
    "de": ("hallo", "guten", "danke", "bitte", "ich", "sie", "möchte", "haben", "ist", "für", "der", "die",
           "das", "und", "nicht", "wie", "wann", "wo", "wieviel", "kann", "auch", "morgen", "heute", "mein",
           "meine", "bestellung", "ja", "mit", "ein", "eine", "noch"),
    "pt": ("olá", "obrigado", "obrigada", "você", "vocês", "quero", "têm", "tem", "por", "favor", "não", "como",
           "quando", "onde", "quanto", "posso", "também", "amanhã", "hoje", "meu", "minha", "pedido", "bom",
           "dia", "uma", "está", "estou", "preciso"),
}
_WORD_LANGS: dict[str, frozenset[str]] = {}
for _lang, _words in _LEXICON.items():
    for _w in _words:
        _WORD_LANGS[_w] = _WORD_LANGS.get(_w, frozenset()) | {_lang}

DetectorFactory.seed = 0


@lru_cache(maxsize=1)
def _profiles() -> tuple[list[str], dict[str, list[float]]]:
    """langdetect's languages and n-gram probabilities (loaded once, ~60 MiB, on first use)."""
    _ld.init_factory()
    factory = _ld._factory
    assert factory is not None
    return factory.langlist, factory.word_lang_prob_map


@lru_cache(maxsize=65536)
def _log_probs(gram: str) -> tuple[float, ...]:
    # langdetect's smoothing: each n-gram multiplies a language's probability by alpha/BASE_FREQ + p.
    _, probs = _profiles()
    weight = 0.5 / 10000
    return tuple(math.log(weight + p) for p in probs[gram])


def _by_words(text: str) -> str | None:
    counts: dict[str, float] = {}
    for word in _WORD.findall(text.lower()):
        langs = _WORD_LANGS.get(word)
        if langs:
            for lang in langs:
                counts[lang] = counts.get(lang, 0.0) + 1.0 / len(langs)
    if not counts:
        return None
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    best, score = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0.0
    return best if score >= 1.5 and score >= 2 * second else None


def _ngrams(text: str) -> list[str]:
    _, probs = _profiles()
    factory = _ld._factory
    assert factory is not None
    detector = factory.create()
    detector.append(text)
    detector.cleaning_text()
    grams: list[str] = []
    ngram = NGram()
    for ch in detector.text:
        ngram.add_char(ch)
        if ngram.capitalword:
            continue
        for n in (1, 2, 3):
            if len(ngram.grams) < n:
                break
            gram = ngram.grams[-n:]
            if gram and gram != " " and gram in probs:
                grams.append(gram)
    return grams


def _by_profiles(text: str) -> str | None:
    langs, _ = _profiles()
    grams = _ngrams(text)
    if len(grams) < MIN_NGRAMS:
        return None
    total = [0.0] * len(langs)
    for gram in grams:
        total = list(map(float.__add__, total, _log_probs(gram)))
    order = sorted(range(len(langs)), key=total.__getitem__, reverse=True)
    best, second = order[0], order[1]
    if (total[best] - total[second]) / len(grams) < MIN_MARGIN:
        return None
    return langs[best]


def load_profiles() -> None:
    """Load langdetect's profiles now (about 0.4 s of CPU): at start-up, not in the first customer's turn.

    Loaded lazily, they would stall the event loop, and every webhook acknowledgement with it, the first
    time a text is not recognised by its words.
    """
    _profiles()


def detect_language(text: str | None) -> str | None:
    """The ISO code of the text's language, or None when there are too few letters or doubt."""
    if not text or len(_LETTER.findall(text)) < MIN_LETTERS:
        return None
    return _by_words(text) or _by_profiles(text)
