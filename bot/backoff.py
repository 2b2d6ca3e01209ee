"""The one retry policy: exponential backoff with jitter, honouring a server's retry-after."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

# However long a server asks us to wait, a customer should not wait longer than this per try.
MAX_RETRY_AFTER = 120.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """At least `attempts` tries and at least `budget` seconds, waiting base·2ⁿ (capped, ±25 % jitter) between.

    The time budget is what lets a one-minute outage at OpenAI or Meta pass without failing the
    messages that arrived during it: five quick tries alone would be over in about half a minute.
    """

    base: float
    maximum: float
    attempts: int
    budget: float = 0.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        wait = min(self.maximum, self.base * 2 ** (attempt - 1)) * (0.75 + random.random() / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
        return wait

    def exhausted(self, attempt: int, started: float | None = None) -> bool:
        """True when try number `attempt` was the last one allowed (`started`: time.monotonic() of the first)."""
        if attempt < self.attempts:
            return False
        return started is None or time.monotonic() - started >= self.budget
