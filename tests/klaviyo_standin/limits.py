"""Klaviyo's rate limits: a burst (1 s) and a steady (60 s) fixed window per endpoint.

Windows are fixed, not sliding, as Klaviyo's are: a window's count resets all at once when
it ends. Quotas are kept per endpoint and per credential holder ("account" for private
keys, the client id for OAuth apps, which Klaviyo gives their own quota). Refused requests
do not count against a window.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from tests.klaviyo_standin.catalog import LIMITS as CATALOG_LIMITS

BURST_WINDOW_S = 1.0
STEADY_WINDOW_S = 60.0

#: Endpoint name -> (burst per window, steady per window), as Klaviyo publishes them.
DEFAULT_LIMITS: dict[str, tuple[int, int]] = {
    "events": (350, 3500),
    "bulk_events": (10, 150),
    "profile_import": (75, 750),
    "profile_bulk_import": (10, 150),
    "profile_bulk_import_reads": (10, 150),
    "suppress": (75, 750),
    "unsuppress": (75, 750),
    "jobs": (75, 750),
    "get_events": (350, 3500),
    "metrics": (10, 150),
    # consent and erasure
    "subscribe": (75, 750),
    "unsubscribe": (75, 750),
    "get_profiles": (75, 750),
    "get_lists": (75, 750),
    "list_members_add": (10, 150),
    "privacy_deletion": (3, 60),
    **CATALOG_LIMITS,
}


@dataclass(frozen=True)
class Verdict:
    """Whether one request may go through, and what the RateLimit-* headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int = 0

    def headers(self) -> dict[str, str]:
        """The RateLimit-* headers (steady window) plus Retry-After when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


def _seconds_until(end_s: float, now_s: float) -> int:
    # Integer seconds, never 0: a client told "0" would retry at once and be refused again.
    return max(1, math.ceil(end_s - now_s))


class RateLimiter:
    """Counts requests per (endpoint, quota) in fixed burst and steady windows."""

    def __init__(self, limits: Mapping[str, tuple[int, int]] | None = None,
                 window_scale: float = 1.0) -> None:
        unknown = set(limits or {}) - set(DEFAULT_LIMITS)
        if unknown:
            raise ValueError(f"unknown endpoint(s) in limits: {sorted(unknown)}; "
                             f"known: {sorted(DEFAULT_LIMITS)}")
        if window_scale <= 0:
            raise ValueError("window_scale must be > 0")
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.burst_window_s = BURST_WINDOW_S * window_scale
        self.steady_window_s = STEADY_WINDOW_S * window_scale
        self._lock = threading.Lock()
        # (endpoint, quota) -> [burst window index, count, steady window index, count]
        self._windows: dict[tuple[str, str], list[int]] = {}

    def acquire(self, endpoint: str, quota: str, now_s: float) -> Verdict:
        """Count one request at ``now_s`` (a monotonic clock) if both windows allow it."""
        burst_limit, steady_limit = self.limits[endpoint]
        burst_index = int(now_s // self.burst_window_s)
        steady_index = int(now_s // self.steady_window_s)
        steady_end = (steady_index + 1) * self.steady_window_s
        with self._lock:
            window = self._windows.setdefault((endpoint, quota), [burst_index, 0, steady_index, 0])
            if window[0] != burst_index:
                window[0], window[1] = burst_index, 0
            if window[2] != steady_index:
                window[2], window[3] = steady_index, 0
            if window[3] >= steady_limit:
                return Verdict(False, steady_limit, 0, _seconds_until(steady_end, now_s),
                               _seconds_until(steady_end, now_s))
            if window[1] >= burst_limit:
                burst_end = (burst_index + 1) * self.burst_window_s
                return Verdict(False, steady_limit, steady_limit - window[3],
                               _seconds_until(steady_end, now_s),
                               _seconds_until(burst_end, now_s))
            window[1] += 1
            window[3] += 1
            return Verdict(True, steady_limit, steady_limit - window[3],
                           _seconds_until(steady_end, now_s))
