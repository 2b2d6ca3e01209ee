"""Business hours: parse "mon-fri 09:00-18:00, sat 09:00-13:00", tell whether a person is there now,
when one next is, and say so in the customer's language ("tomorrow from 9:00", "domani dalle 9:00").

Pure: no I/O and no clock; every question takes `now` (an aware datetime). Hours are wall-clock
times in the business's IANA time zone, so 09:00 stays 09:00 across daylight-saving changes. An
opening time that a spring-forward skips (02:30 on the night the clocks jump from 02:00 to 03:00)
opens at the jump; one that an autumn fall-back repeats opens at its first occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_MINUTES = 24 * 60
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ALIASES = {
    "monday": 0, "tues": 1, "tuesday": 1, "weds": 2, "wednesday": 2, "thur": 3, "thurs": 3, "thursday": 3,
    "friday": 4, "saturday": 5, "sunday": 6, **{name: i for i, name in enumerate(DAY_NAMES)},
}
_INTERVAL = re.compile(r"^(\d{1,2})(?::(\d{2}))?-(\d{1,2})(?::(\d{2}))?$")
_EXAMPLE = "write it like 'mon-fri 09:00-18:00, sat 09:00-13:00'"

Interval = tuple[int, int]  # minutes since local midnight: [start, end), end at most 24:00


def _plain(hour: int) -> str:
    return ""


def _it_from(hour: int) -> str:
    return "dall'" if hour == 1 else "dalle "  # "dall'1:00", "dalle 9:00"


def _es_from(hour: int) -> str:
    return "desde la " if hour == 1 else "desde las "  # "desde la 1:00", "desde las 9:00"


@dataclass(frozen=True, slots=True)
class _Phrases:
    """The words of one language for "when a person will answer"; {t} is the time, {d} the day."""

    days: tuple[str, ...]
    today: str
    tomorrow: str
    on_day: str
    next_day: str
    shortly: str
    asap: str
    clock: str = "{h}:{m:02d}"
    since: Callable[[int], str] = _plain  # the word before the time, where it depends on the hour ({s})


PHRASES = {
    "en": _Phrases(days=("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
                   today="today from {t}", tomorrow="tomorrow from {t}", on_day="on {d} from {t}",
                   next_day="next {d} from {t}", shortly="shortly", asap="as soon as possible"),
    "it": _Phrases(days=("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"),
                   today="oggi {s}{t}", tomorrow="domani {s}{t}", on_day="{d} {s}{t}",
                   next_day="{d} {next} {s}{t}", shortly="a breve", asap="appena possibile", since=_it_from),
    "es": _Phrases(days=("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
                   today="hoy {s}{t}", tomorrow="mañana {s}{t}", on_day="el {d} {s}{t}",
                   next_day="el próximo {d} {s}{t}", shortly="en breve", asap="lo antes posible", since=_es_from),
    "fr": _Phrases(days=("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
                   today="aujourd'hui à partir de {t}", tomorrow="demain à partir de {t}",
                   on_day="{d} à partir de {t}", next_day="{d} prochain à partir de {t}", shortly="sous peu",
                   asap="dès que possible", clock="{h}h{m:02d}"),
    "de": _Phrases(days=("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
                   today="heute ab {t} Uhr", tomorrow="morgen ab {t} Uhr", on_day="am {d} ab {t} Uhr",
                   next_day="nächsten {d} ab {t} Uhr", shortly="in Kürze", asap="so bald wie möglich"),
}


def _language(language: str | None) -> str:
    lang = (language or "en").split("-")[0].split("_")[0].lower()
    return lang if lang in PHRASES else "en"


def _days(token: str, clause: str) -> list[int]:
    """'mon', 'mon-fri', 'fri-mon' (wrapping) or 'mon/wed/fri' as weekday numbers (Monday is 0)."""
    found: list[int] = []
    for part in token.split("/"):
        first, dash, last = part.partition("-")
        try:
            start = _ALIASES[first]
            end = _ALIASES[last] if dash else start
        except KeyError:
            raise ValueError(f"business hours: unknown day in {clause!r}; use mon, tue, wed, thu, fri, sat, "
                             "sun") from None
        found += [(start + i) % 7 for i in range((end - start) % 7 + 1)]
    return found


def _interval(token: str, clause: str) -> Interval:
    match = _INTERVAL.match(token)
    if match is None:
        raise ValueError(f"business hours: {token!r} in {clause!r} is not a time range like 09:00-18:00")
    h1, m1, h2, m2 = (int(g) if g else 0 for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"business hours: {token!r} in {clause!r} has a time that does not exist")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"business hours: {token!r} in {clause!r} opens and closes at the same time")
    return start, end


def _merge(day: int, intervals: list[Interval]) -> tuple[Interval, ...]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start < merged[-1][1]:
            raise ValueError(f"business hours: the times on {DAY_NAMES[day]} overlap")
        if merged and start == merged[-1][1]:  # 22:00-24:00 and a spill-over 00:00-02:00 touch: one stretch
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def _instant(zone: ZoneInfo, day: date, minute: int) -> datetime:
    """The moment the wall clock first reads `minute` on `day` (the jump itself, if a DST gap skips it)."""
    wall = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
    if wall.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return wall
    # In a gap, fold=1 reads the time with the offset after the jump (an earlier instant) and fold=0 with
    # the one before (a later instant): the jump lies between them, found to the second.
    low, high = wall.replace(fold=1).astimezone(UTC), wall.replace(fold=0).astimezone(UTC)
    target = wall.replace(tzinfo=None)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= target:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0).astimezone(zone)


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Opening intervals for each weekday (Monday first) in one time zone."""

    zone: ZoneInfo
    week: tuple[tuple[Interval, ...], ...]

    @classmethod
    def parse(cls, spec: str, time_zone: str) -> BusinessHours:
        """Read a spec such as 'mon-fri 09:00-13:00 14:00-18:00, sat 09:00-13:00, sun closed'.

        Clauses are separated by commas or semicolons; days not named are closed. Days are ranges
        ('mon-fri'), lists ('mon/wed', or 'mon, wed 9-12') or single; a range that ends past midnight
        ('fri 20:00-02:00') runs into the next day. ValueError says what is wrong and how to write it.
        """
        try:
            zone = ZoneInfo(time_zone.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"business hours: unknown time zone {time_zone!r}; use an IANA name such as "
                             "Europe/Rome") from None
        text = re.sub(r"\s*[-–—]\s*", "-", spec.strip().lower())
        if not text:
            raise ValueError(f"business hours are empty: {_EXAMPLE}")
        own: dict[int, list[Interval]] = {}
        spill: dict[int, list[Interval]] = {}
        pending: list[int] = []
        for clause in (c.strip() for c in re.split(r"[,;]", text)):
            if not clause:
                continue
            days: list[int] = list(pending)
            intervals: list[Interval] = []
            closed = False
            for token in clause.split():
                if token == "closed":
                    closed = True
                elif token[0].isdigit():
                    intervals.append(_interval(token, clause))
                else:
                    days += _days(token, clause)
            if not intervals and not closed:
                if not days:
                    raise ValueError(f"business hours: {clause!r} has no days or times; {_EXAMPLE}")
                pending = days  # 'mon, wed 9-12': the days continue into the next clause
                continue
            pending = []
            if not days:
                raise ValueError(f"business hours: {clause!r} has no days; {_EXAMPLE}")
            if closed and intervals:
                raise ValueError(f"business hours: {clause!r} is both closed and open")
            for day in days:
                if day in own:
                    raise ValueError(f"business hours: {DAY_NAMES[day]} is given twice")
                own[day] = []
                for start, end in intervals:
                    if end > start:
                        own[day].append((start, end))
                    else:  # past midnight: the rest belongs to the next day
                        own[day].append((start, DAY_MINUTES))
                        spill.setdefault((day + 1) % 7, []).append((0, end))
        if pending:
            names = ", ".join(DAY_NAMES[d] for d in pending)
            raise ValueError(f"business hours: {names} has no times; write e.g. '{names} 09:00-13:00' or "
                             f"'{names} closed'")
        week = tuple(_merge(d, own.get(d, []) + spill.get(d, [])) for d in range(7))
        return cls(zone=zone, week=week)

    def _local(self, now: datetime) -> datetime:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be a timezone-aware datetime")
        return now.astimezone(self.zone)

    def is_open(self, now: datetime) -> bool:
        """Whether `now` falls inside an opening interval, on the business's wall clock."""
        local = self._local(now)
        second = local.hour * 3600 + local.minute * 60 + local.second
        return any(start * 60 <= second < end * 60 for start, end in self.week[local.weekday()])

    def next_opening(self, now: datetime) -> datetime | None:
        """`now` itself when open, else the next moment the business opens; None if it never does.

        The answer is in the business's zone. Compare it through `.astimezone(UTC)`: by PEP 495 a local
        time the autumn repeats never equals a time in another zone.
        """
        local = self._local(now)
        if self.is_open(now):
            return local
        for offset in range(8):  # today's later hours, the next six days, and today's weekday again
            day = local.date() + timedelta(days=offset)
            for start, _end in self.week[day.weekday()]:
                opening = _instant(self.zone, day, start)
                if opening > now:
                    return opening
        return None

    def answer_phrase(self, now: datetime, language: str | None = None) -> str:
        """When a person will answer: 'shortly', 'today from 14:00', 'tomorrow from 9:00', 'on Monday
        from 9:00', 'next Monday from 9:00', or 'as soon as possible' when the spec never opens.

        In en, it, es, fr and de (English for anything else).
        """
        words = PHRASES[_language(language)]
        opening = self.next_opening(now)
        if opening is None:
            return words.asap
        if self.is_open(now):
            return words.shortly
        local = self._local(now)
        days = (opening.date() - local.date()).days
        clock = words.clock.format(h=opening.hour, m=opening.minute)
        pattern = words.today if days == 0 else words.tomorrow if days == 1 else \
            words.on_day if days < 7 else words.next_day
        name = words.days[opening.weekday()]
        # Italian agrees "prossimo" with the day (domenica is feminine); no other pattern uses {next}.
        return pattern.format(t=clock, d=name, s=words.since(opening.hour),
                              next="prossima" if name == "domenica" else "prossimo")
