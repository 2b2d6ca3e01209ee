"""A conversation's guards: per-customer limits, another bot on the line, and opening hours. Pure functions.

The conversation's actor asks these before each model call; they decide, the actor acts. Their
state lives in the conversation's row (the hourly window, written with the turn) or, for what only
matters while the customer is writing right now, in the actor's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from bot.configuration.settings import RuntimeSettings
from bot.persistence.conversations import Conversation
from bot.texts import text as fixed_text

HOUR = 3600.0
# A person cannot write this many messages in a minute: a flood is limited before it costs an hour of turns.
FLOOD_WINDOW = 60.0
# Another automated sender: it answers ours within this time, so many times in a row…
LOOP_REPLY_SECONDS = 2.0
LOOP_FAST_REPLIES = 10
# …or it sends the very same text again and again.
LOOP_SAME_TEXT = 5


def within_hour_window(conv: Conversation, now: float) -> Conversation:
    """The conversation with its hourly window started afresh when the last one is over."""
    start = conv.rate_window_start
    if start is not None and now - start < HOUR:
        return conv
    flag = None if conv.flag == "rate_limited" else conv.flag
    return replace(conv, rate_window_start=now, rate_window_turns=0, flag=flag,
                   flag_at=None if flag is None else conv.flag_at)


def over_limit(conv: Conversation, recent_messages: int, settings: RuntimeSettings) -> bool:
    """True when this customer has had their turns this hour, or is writing faster than a person can.

    Once limited, the customer stays limited until the hour is over (`within_hour_window` clears the
    flag), however quiet they have been since: a flood that stops for a minute gets no new turns.
    """
    limit = settings.customer_turns_per_hour
    return bool(limit) and (conv.flag == "rate_limited" or conv.rate_window_turns >= limit
                            or recent_messages > limit)


@dataclass(frozen=True, slots=True)
class LoopWatch:
    """What the actor remembers about the customer's last messages, to tell a bot from a person."""

    last_sent_at: float = 0.0
    fast_replies: int = 0
    last_text: str = ""
    same_text: int = 0
    counted_sent_at: float = 0.0  # the reply of ours whose fast answer was counted last

    def sent(self, at: float) -> LoopWatch:
        """We sent a reply at `at`."""
        return replace(self, last_sent_at=at)

    def heard(self, text: str | None, at: float, fast_within: float = LOOP_REPLY_SECONDS) -> LoopWatch:
        """The customer wrote `text` at `at` (within `fast_within` seconds of our last reply counts as fast).

        One fast answer counts per reply of ours: a bot answers each of our messages at once, while a
        person (or a flood) may write many messages after one of ours, which is not a loop.
        """
        fast, counted = self.fast_replies, self.counted_sent_at
        if not (self.last_sent_at and 0 <= at - self.last_sent_at < fast_within):
            fast = 0
        elif counted != self.last_sent_at:
            fast, counted = fast + 1, self.last_sent_at
        body = (text or "").strip()
        same = self.same_text + 1 if body and body == self.last_text else 0
        return LoopWatch(self.last_sent_at, fast, body, same, counted)

    @property
    def looping(self) -> bool:
        """An automated sender is on the other end: answering would never end."""
        return self.fast_replies >= LOOP_FAST_REPLIES or self.same_text >= LOOP_SAME_TEXT - 1


def person_answers(settings: RuntimeSettings, language: str | None, now: float, key: str) -> str:
    """A fixed text (`handoff`, `rate_limited`) that says when a person will answer, if opening hours are set."""
    if settings.hours is None:
        return fixed_text(key, language)
    when = settings.hours.answer_phrase(datetime.fromtimestamp(now, UTC), language)
    return fixed_text(f"{key}_when", language, when=when)


def people_are_in(settings: RuntimeSettings, now: float) -> bool:
    """True when the AI should leave the conversation to the team: it answers only outside opening hours."""
    return settings.ai_outside_hours_only and settings.hours is not None and \
        settings.hours.is_open(datetime.fromtimestamp(now, UTC))
