"""The one retry policy: exponential backoff with jitter, honouring a server's retry-after."""

from __future__ import annotations

import random
from dataclasses import dataclass

# However long a server asks us to wait, a customer should not wait longer than this per try.
MAX_RETRY_AFTER = 120.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """`attempts` tries in all, waiting base·2ⁿ (capped at `maximum`, ±25 % jitter) between them."""

    base: float
    maximum: float
    attempts: int

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        wait = min(self.maximum, self.base * 2 ** (attempt - 1)) * (0.75 + random.random() / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
        return wait

    def exhausted(self, attempt: int) -> bool:
        """True when try number `attempt` was the last one allowed."""
        return attempt >= self.attempts
