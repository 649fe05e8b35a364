"""When a failed event is tried again: exponential backoff with jitter, capped."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 30.0
    max_s: float = 3600.0

    def delay(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        """Delay before the next try after ``attempts`` tries (1-based).

        "Equal jitter": a uniform draw between half the exponential ceiling and the ceiling
        spreads the retries of a batch that failed together, so they do not hit Klaviyo
        together again, while still guaranteeing the delay grows.
        """
        ceiling = min(self.max_s, self.base_s * (2 ** max(0, attempts - 1)))
        draw = (rng or random).uniform(ceiling / 2, ceiling)
        return timedelta(seconds=draw)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
