"""Date filters as people type them: `2025-03-01` (a day, in the server's time zone) or Unix seconds."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from bot.web.jsonapi import stop


def day_start(value: str, name: str) -> float:
    """The first second of a day (or the Unix time given); 400 naming the parameter otherwise."""
    text = value.strip()
    if text.replace(".", "", 1).isdigit() and text.isascii():
        seconds = float(text)
        if seconds < 1e11:
            return seconds
    try:
        day = datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        stop(400, f'"{name}" is a date like 2025-03-01 (or Unix seconds), not {text[:40]!r}')
    return time.mktime(day.timetuple())


def day_range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    """[since, until) from `from` and `to`; `to` as a day includes the whole day. 400 when `to` is before `from`."""
    start = day_start(since, "from") if since else None
    end: float | None = None
    if until:
        end = day_start(until, "to")
        text = until.strip()
        if not (text.replace(".", "", 1).isdigit() and text.isascii()):
            end = time.mktime((datetime.fromtimestamp(end) + timedelta(days=1)).timetuple())
    if start is not None and end is not None and end <= start:
        stop(400, '"to" is before "from"')
    return start, end
