"""Business hours: the spec, open or not, the next opening across DST changes, and the phrase in five languages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.hours import BusinessHours

# Nothing here opens a database: the PostgreSQL half of the suite leaves these to the SQLite half.
pytestmark = pytest.mark.no_database

ROME = ZoneInfo("Europe/Rome")
SHOP = "mon-fri 09:00-13:00 14:00-18:00, sat 09:00-13:00"


def rome(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ROME)


def utc(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def test_the_spec_gives_each_day_its_intervals() -> None:
    hours = BusinessHours.parse(SHOP, "Europe/Rome")
    assert hours.week[0] == ((540, 780), (840, 1080))
    assert hours.week[4] == hours.week[0]
    assert hours.week[5] == ((540, 780),)
    assert hours.week[6] == ()  # not named: closed


def test_lists_ranges_that_wrap_and_closed_days() -> None:
    hours = BusinessHours.parse("Mon, Wed 9-12; fri/sun 10:00 - 11:30, tue/thu 15-16, sat closed", "Europe/Rome")
    assert [bool(day) for day in hours.week] == [True, True, True, True, True, False, True]
    assert hours.week[0] == ((540, 720),) and hours.week[2] == ((540, 720),)
    assert hours.week[6] == ((600, 690),)
    weekend = BusinessHours.parse("sat-mon 10-12", "Europe/Rome")
    assert [bool(day) for day in weekend.week] == [True, False, False, False, False, True, True]


def test_past_midnight_runs_into_the_next_day() -> None:
    hours = BusinessHours.parse("fri-sat 20:00-02:00", "Europe/Rome")
    assert hours.week[4] == ((1200, 1440),)
    assert hours.week[5] == ((0, 120), (1200, 1440))
    assert hours.week[6] == ((0, 120),)
    assert hours.is_open(rome(2026, 1, 10, 1, 30))  # Saturday 01:30: Friday night still
    assert not hours.is_open(rome(2026, 1, 10, 2, 0))


@pytest.mark.parametrize("spec, zone, message", [
    ("", "Europe/Rome", "empty"),
    ("mon-fri", "Europe/Rome", "mon, tue, wed, thu, fri has no times"),
    ("09:00-18:00", "Europe/Rome", "has no days"),
    ("funday 09:00-18:00", "Europe/Rome", "unknown day"),
    ("mon 25:00-26:00", "Europe/Rome", "does not exist"),
    ("mon 9:60-10:00", "Europe/Rome", "does not exist"),
    ("mon 24:30-10:00", "Europe/Rome", "does not exist"),
    ("mon 9:00-9:00", "Europe/Rome", "same time"),
    ("mon 9am-5pm", "Europe/Rome", "not a time range"),
    ("mon 9-12, mon 14-18", "Europe/Rome", "mon is given twice"),
    ("mon 09:00-13:00 12:00-18:00", "Europe/Rome", "overlap"),
    ("mon closed 9-12", "Europe/Rome", "both closed and open"),
    ("mon-fri 09:00-18:00", "Mars/Olympus", "unknown time zone"),
])
def test_bad_specs_say_what_is_wrong(spec: str, zone: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BusinessHours.parse(spec, zone)


def test_open_closed_and_the_next_opening() -> None:
    hours = BusinessHours.parse(SHOP, "Europe/Rome")
    friday_lunch = rome(2026, 1, 9, 13, 30)
    assert not hours.is_open(friday_lunch)
    assert hours.next_opening(friday_lunch) == rome(2026, 1, 9, 14)
    assert hours.is_open(rome(2026, 1, 9, 17, 59))
    assert not hours.is_open(rome(2026, 1, 9, 18))
    assert hours.next_opening(rome(2026, 1, 9, 18)) == rome(2026, 1, 10, 9)
    assert hours.next_opening(rome(2026, 1, 10, 13)) == rome(2026, 1, 12, 9)  # Saturday afternoon → Monday
    now = rome(2026, 1, 9, 10)
    assert hours.next_opening(now) == now
    # The same instant in another zone is the same answer: hours are Rome's wall clock.
    assert hours.is_open(utc(2026, 1, 9, 16, 30)) and not hours.is_open(utc(2026, 1, 9, 17, 30))


def test_naive_times_are_refused() -> None:
    hours = BusinessHours.parse(SHOP, "Europe/Rome")
    with pytest.raises(ValueError, match="timezone-aware"):
        hours.is_open(datetime(2026, 1, 9, 10))


def test_nine_oclock_stays_nine_oclock_across_both_dst_changes() -> None:
    hours = BusinessHours.parse("mon-fri 09:00-18:00", "Europe/Rome")
    # Clocks go forward on Sunday 29 March 2026: Monday's 09:00 is 07:00 UTC, Friday's was 08:00.
    spring = hours.next_opening(rome(2026, 3, 28, 12))
    assert spring is not None and spring.astimezone(UTC) == utc(2026, 3, 30, 7)
    assert hours.next_opening(rome(2026, 3, 26, 20)) == utc(2026, 3, 27, 8)
    assert hours.answer_phrase(rome(2026, 3, 28, 12)) == "on Monday from 9:00"
    # And back on Sunday 25 October 2026: Monday's 09:00 is 08:00 UTC again.
    autumn = hours.next_opening(rome(2026, 10, 24, 12))
    assert autumn is not None and autumn.astimezone(UTC) == utc(2026, 10, 26, 8)
    assert hours.is_open(utc(2026, 10, 26, 8)) and not hours.is_open(utc(2026, 10, 26, 7, 59))


def test_an_opening_the_spring_jump_skips_opens_at_the_jump() -> None:
    hours = BusinessHours.parse("sun 02:30-04:00", "Europe/Rome")
    before = utc(2026, 3, 29, 0, 30)  # 01:30 CET; at 02:00 CET the clocks read 03:00 CEST (01:00 UTC)
    opening = hours.next_opening(before)
    assert opening == utc(2026, 3, 29, 1)
    assert opening is not None and (opening.hour, opening.minute) == (3, 0)
    # Arithmetic on an aware datetime is wall-clock arithmetic: step back a second in UTC.
    assert not hours.is_open(opening.astimezone(UTC) - timedelta(seconds=1)) and hours.is_open(opening)


def test_an_opening_the_autumn_repeats_opens_the_first_time() -> None:
    hours = BusinessHours.parse("sun 02:30-04:00", "Europe/Rome")
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET) on 25 October 2026. (An ambiguous
    # local time never equals a time in another zone, PEP 495: compare in UTC.)
    opening = hours.next_opening(utc(2026, 10, 25, 0))
    assert opening is not None and opening.astimezone(UTC) == utc(2026, 10, 25, 0, 30)
    assert hours.is_open(utc(2026, 10, 25, 0, 45)) and hours.is_open(utc(2026, 10, 25, 1, 45))
    assert not hours.is_open(utc(2026, 10, 25, 3, 0))  # 04:00 CET


def test_a_spec_with_no_opening_at_all() -> None:
    hours = BusinessHours.parse("mon-sun closed", "Europe/Rome")
    now = rome(2026, 1, 9, 10)
    assert not hours.is_open(now)
    assert hours.next_opening(now) is None
    assert hours.answer_phrase(now, "it") == "appena possibile"
    assert hours.answer_phrase(now, "en") == "as soon as possible"


@pytest.mark.parametrize("language, lunch, evening, weekend, open_now", [
    ("en", "today from 14:00", "tomorrow from 9:00", "on Monday from 9:00", "shortly"),
    ("it", "oggi dalle 14:00", "domani dalle 9:00", "lunedì dalle 9:00", "a breve"),
    ("es", "hoy desde las 14:00", "mañana desde las 9:00", "el lunes desde las 9:00", "en breve"),
    ("fr", "aujourd'hui à partir de 14h00", "demain à partir de 9h00", "lundi à partir de 9h00", "sous peu"),
    ("de", "heute ab 14:00 Uhr", "morgen ab 9:00 Uhr", "am Montag ab 9:00 Uhr", "in Kürze"),
])
def test_when_a_person_will_answer(language: str, lunch: str, evening: str, weekend: str, open_now: str) -> None:
    hours = BusinessHours.parse(SHOP, "Europe/Rome")
    assert hours.answer_phrase(rome(2026, 1, 9, 13, 30), language) == lunch
    assert hours.answer_phrase(rome(2026, 1, 9, 19), language) == evening
    assert hours.answer_phrase(rome(2026, 1, 10, 14), language) == weekend
    assert hours.answer_phrase(rome(2026, 1, 9, 10), language) == open_now


def test_the_same_day_next_week_and_the_grammar_of_one_oclock() -> None:
    mondays = BusinessHours.parse("mon 09:00-12:00", "Europe/Rome")
    monday_afternoon = rome(2026, 1, 12, 13)
    assert mondays.answer_phrase(monday_afternoon, "en") == "next Monday from 9:00"
    assert mondays.answer_phrase(monday_afternoon, "it") == "lunedì prossimo dalle 9:00"
    assert mondays.answer_phrase(monday_afternoon, "de") == "nächsten Montag ab 9:00 Uhr"
    sundays = BusinessHours.parse("sun 10:00-12:00", "Europe/Rome")
    assert sundays.answer_phrase(rome(2026, 1, 11, 13), "it") == "domenica prossima dalle 10:00"
    night = BusinessHours.parse("mon-sun 01:00-05:00", "Europe/Rome")
    assert night.answer_phrase(rome(2026, 1, 9, 22), "it") == "domani dall'1:00"
    assert night.answer_phrase(rome(2026, 1, 9, 22), "es") == "mañana desde la 1:00"
    assert night.answer_phrase(rome(2026, 1, 9, 22), "pt-BR") == "tomorrow from 1:00"
