"""The redaction boundary (bot/ai/privacy.py), property-tested: the customer's number in any script,
with any separators and prefixes, or only its last 7+ digits, never survives; other text is left as
it was. The checks use tests/leaks.py, which folds text its own way."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.ai.privacy import PHONE_MASK, fold, make_redactor, mask_numbers, redact_deep
from tests.leaks import JOINER, flatten, leaked

CUSTOMER = "393331234567"
# The zero of each digit script; the other digits follow it in order.
ZEROS = {
    "ascii": "0", "fullwidth": "\uff10", "arabic-indic": "\u0660", "extended arabic-indic": "\u06f0",
    "devanagari": "\u0966", "bengali": "\u09e6", "gujarati": "\u0ae6", "tamil": "\u0be6", "thai": "\u0e50",
    "lao": "\u0ed0", "myanmar": "\u1040", "khmer": "\u17e0", "mongolian": "\u1810", "nko": "\u07c0",
    "mathematical bold": "\U0001d7ce", "mathematical monospace": "\U0001d7f6",
}
# What people, keyboards and copy-paste put between digits, visible or not.
SEPARATORS = [
    " ", "-", ".", "/", "(", ")", "\u00a0", "\u2013", "\u2014", "\u2010", "\u2011", "\u2212", "\u200b", "\u200c",
    "\u200d", "\u200e", "\u200f", "\u2060", "\u2061", "\u2062", "\u2063", "\u2064", "\ufeff", "\u00ad", "_", ",",
    "\u00b7", "*", ":", "\u2009", "\u202f", "\u3000", "\u0336", "\n",
    ";", "|", "#", "~", "\u30fc", "\u0640",  # found after the review: semicolons, pipes, katakana long mark, tatweel
]
PREFIXES = ["", "+", "\uff0b", "00", "+ ", "(+", "\u200b+", "tel:"]


def _write(digits: str, scripts: list[str], seps: list[str]) -> str:
    out = []
    for i, d in enumerate(digits):
        out.append(chr(ord(ZEROS[scripts[i % len(scripts)]]) + int(d)))
        if i < len(digits) - 1:
            out.append(seps[i % len(seps)])
    return "".join(out)


numbers = st.builds(lambda cc, national: cc + national,
                    st.sampled_from(["39", "1", "44", "49", "351", "971", "91", "880"]),
                    st.text("0123456789", min_size=7, max_size=10)).filter(lambda n: n[-7:] != n[-8:-1])
scripts = st.lists(st.sampled_from(sorted(ZEROS)), min_size=1, max_size=3)
separators = st.lists(st.lists(st.sampled_from(SEPARATORS), max_size=2).map("".join), min_size=1, max_size=4)
# Text around the number: words in several scripts, other (short) numbers, punctuation.
filler = st.lists(st.sampled_from([*"abcèéß ,.!?€%ابتनमस日本", "ciao ", "12", "5,50 ", "ore 10:30 "]),
                  max_size=12).map("".join)


@settings(max_examples=250, deadline=None, derandomize=True)
@given(number=numbers, scripts=scripts, seps=separators, prefix=st.sampled_from(PREFIXES),
       tail=st.integers(min_value=7, max_value=13), before=filler, after=filler)
def test_the_number_never_survives_in_any_script_or_format(
    number: str, scripts: list[str], seps: list[str], prefix: str, tail: int, before: str, after: str
) -> None:
    written = prefix + _write(number[-tail:], scripts, seps)
    text = f"{before} tel {written} ok {after}"
    out = make_redactor([number])(text)
    assert leaked(out, [number]) == [], (text, out)
    assert PHONE_MASK in out
    # What was around the number is still there, as it was.
    assert out.startswith(f"{before} tel ") and out.endswith(f" ok {after}"), (text, out)


# Text that holds no 7-digit tail of the customer's number: other phone numbers, prices, dates, codes.
unrelated = st.lists(st.one_of(
    st.sampled_from(["Ordine", "totale", "il", "alle", "grazie", "€", "codice", "tel.", "IVA", "%"]),
    st.builds(lambda a, b: f"{a},{b:02d} €", st.integers(0, 9999), st.integers(0, 99)),
    st.dates().map(lambda d: d.isoformat()),
    st.dates().map(lambda d: d.strftime("%d/%m/%Y")),
    st.text("0123456789 -.", min_size=1, max_size=14),
), max_size=12).map(" ".join)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(number=numbers, text=unrelated)
def test_text_without_the_number_is_left_alone(number: str, text: str) -> None:
    if number[-7:] in flatten(text):
        return  # it does hold the customer's digits: not unrelated after all
    assert make_redactor([number])(text) == text


@pytest.mark.parametrize("text", [
    "３３３１２３４５６７", "٣٣٣١٢٣٤٥٦٧", "۳۳۳۱۲۳۴۵۶۷", "३३३१२३४५६७", "৩৩৩১২৩৪৫৬৭", "๓๓๓๑๒๓๔๕๖๗",
    "333–123–4567", "333\u20111234567", "333\u22121234567", "333\u200b123\u200b4567", "333\u20601234567",
    "333\u00ad1234567", "333_123_4567", "333,123,4567", "333·123·4567", "333*123*4567", "333:123:4567",
    "1234567", "31234567", "+39 333 123 4567", "0039 333 1234567", "03331234567", "+39 (0) 333 1234567",
    "３️⃣３️⃣３️⃣１️⃣２️⃣３️⃣４️⃣５️⃣６️⃣７️⃣", "333̶1̶2̶3̶4̶5̶6̶7̶", "㉝3 123 4567",
])
def test_every_form_of_the_security_review_is_masked(text: str) -> None:
    out = make_redactor([CUSTOMER])(f"il mio numero: {text}, grazie")
    assert leaked(out, [CUSTOMER]) == [], out
    assert out.startswith("il mio numero: ") and out.endswith(", grazie")


@pytest.mark.parametrize("text", [
    "３３３１２３４５６７", "٣٣٣١٢٣٤٥٦٧", "333\u200b1234567", "333–123–4567", "1234567", "+39 333 123 4567",
])
def test_the_suite_guard_sees_every_form(text: str) -> None:
    # The conftest guard must catch what the redactor is there to remove.
    assert leaked(f"x {text} y", [CUSTOMER]) == [CUSTOMER]


def test_the_guard_never_joins_two_segments_of_a_request_into_a_number() -> None:
    # A request's URL, headers and values are joined with JOINER: digits on either side stay apart.
    assert flatten(JOINER) == JOINER
    assert leaked(JOINER.join([CUSTOMER[:6], CUSTOMER[6:]]), [CUSTOMER]) == []
    assert leaked("|".join([CUSTOMER[:6], CUSTOMER[6:]]), [CUSTOMER]) == [CUSTOMER]  # | is a separator


def test_masks_land_on_the_original_text_when_folding_changes_lengths() -> None:
    # ㉑ folds to two digits, ½ to three characters: the mask must still cover exactly the number.
    text = "½ kg, ㉑ pezzi; chiamami al ３３３ １２３ ４５６７ — grazie ①"
    folded, index = fold(text)
    assert index is not None and len(folded) > len(text)
    assert make_redactor([CUSTOMER])(text) == f"½ kg, ㉑ pezzi; chiamami al {PHONE_MASK} — grazie ①"


def test_numbers_around_the_customers_are_kept() -> None:
    redact = make_redactor([CUSTOMER])
    assert redact("ordine 98765, totale 12,50 €, il 2024-05-01") == "ordine 98765, totale 12,50 €, il 2024-05-01"
    assert redact("altro numero +39 347 765 4321") == "altro numero +39 347 765 4321"
    assert redact("123456 è corto") == "123456 è corto"  # six digits of the tail are not a number
    assert redact("1234567 89") == f"{PHONE_MASK} 89"
    assert redact("costa 5,50 3331234567") == f"costa 5,50 {PHONE_MASK}"  # the price keeps its 0
    assert redact("tel. 0333 1234567 o (0) 333 1234567") == f"tel. {PHONE_MASK} o ({PHONE_MASK}"
    assert make_redactor(["447911123456"])("+44 (0) 7911 123456!") == f"{PHONE_MASK}!"


def test_several_numbers_and_deep_values() -> None:
    redact = make_redactor([CUSTOMER, "447911123456", None, "12"])
    value = {"a": ["tel 447911123456 o ٣٣٣١٢٣٤٥٦٧", {"image_url": "data:image/png;base64,1234567"}]}
    assert redact_deep(value, redact) == {
        "a": [f"tel {PHONE_MASK} o {PHONE_MASK}", {"image_url": "data:image/png;base64,1234567"}]
    }
    assert make_redactor(["12", None])("1234567") == "1234567"  # too short to be a number


def test_log_masking_hides_every_long_digit_run() -> None:
    assert mask_numbers("email: '333_123_4567' is not valid; order 12") == (
        "email: '+33****4567' is not valid; order 12"
    )
    assert "1234" not in mask_numbers("chiamare ３３３ １２３ ４５６７")
    assert mask_numbers("no digits here") == "no digits here"
