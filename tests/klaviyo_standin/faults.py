"""Faults the stand-in injects on demand: 5xx, 429, 401, dropped connections, poison events.

Every method is thread-safe and can be called while requests are in flight. Faults apply
to ``/api/...`` requests only, never to ``/oauth/token`` (so a sender can still refresh a
token during a 401 window, and find that it does not help).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class Moment(Enum):
    """Whether a fault strikes before the request is processed or after (work done, answer lost)."""

    BEFORE = "before"
    AFTER = "after"


@dataclass(frozen=True)
class Failure:
    """A server error to answer with, and when."""

    status: int
    moment: Moment


class Faults:
    """The switchboard of injected faults; the server asks it once per request."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.clear()

    def clear(self) -> None:
        """Turn every fault off."""
        with self._lock:
            self._fail_rate = 0.0
            self._fail_rate_status = 500
            self._fail_next = 0
            self._fail_next_status = 503
            self._fail_next_moment = Moment.BEFORE
            self._rejected: dict[str, str] = {}
            self._auth_failing = False
            self._rate_limit_next = 0
            self._retry_after_s = 1
            self._drop_next = 0
            self._drop_moment = Moment.BEFORE

    def fail_rate(self, rate: float = 0.05, status: int = 500) -> None:
        """Answer a random fraction ``rate`` of requests with ``status`` (seeded, repeatable)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        with self._lock:
            self._fail_rate, self._fail_rate_status = rate, status

    def fail_next(self, count: int, status: int = 503, after_processing: bool = False) -> None:
        """Answer the next ``count`` requests with ``status``.

        With ``after_processing`` the request is fully processed (events recorded) before
        the error is returned: Klaviyo did the work but the client cannot know.
        Replaces any pending ``fail_next``.
        """
        with self._lock:
            self._fail_next, self._fail_next_status = count, status
            self._fail_next_moment = Moment.AFTER if after_processing else Moment.BEFORE

    def reject_unique_ids(self, details: Mapping[str, str]) -> None:
        """Make the events with these unique_ids invalid (400, with the given detail text)."""
        with self._lock:
            self._rejected.update(details)

    def auth_failing(self, on: bool = True) -> None:
        """While on, every API request gets a 401 JSON:API error."""
        with self._lock:
            self._auth_failing = on

    def rate_limit_next(self, count: int, retry_after: int = 1) -> None:
        """Answer the next ``count`` requests 429 with ``Retry-After: retry_after``."""
        with self._lock:
            self._rate_limit_next, self._retry_after_s = count, max(1, int(retry_after))

    def drop_next(self, count: int, after_processing: bool = False) -> None:
        """Close the connection without answering on the next ``count`` requests."""
        with self._lock:
            self._drop_next = count
            self._drop_moment = Moment.AFTER if after_processing else Moment.BEFORE

    # -- asked by the server -------------------------------------------------------------

    def take_drop(self) -> Moment | None:
        with self._lock:
            if self._drop_next <= 0:
                return None
            self._drop_next -= 1
            return self._drop_moment

    def is_auth_failing(self) -> bool:
        with self._lock:
            return self._auth_failing

    def take_rate_limit(self) -> int | None:
        """Retry-After seconds if this request must be refused 429, else None."""
        with self._lock:
            if self._rate_limit_next <= 0:
                return None
            self._rate_limit_next -= 1
            return self._retry_after_s

    def take_failure(self) -> Failure | None:
        with self._lock:
            if self._fail_next > 0:
                self._fail_next -= 1
                return Failure(self._fail_next_status, self._fail_next_moment)
            if self._fail_rate and self._rng.random() < self._fail_rate:
                return Failure(self._fail_rate_status, Moment.BEFORE)
            return None

    def rejection(self, unique_id: str | None) -> str | None:
        """The detail text if the event with ``unique_id`` is to be refused."""
        if unique_id is None:
            return None
        with self._lock:
            return self._rejected.get(unique_id)

    def has_rejections(self) -> bool:
        with self._lock:
            return bool(self._rejected)
