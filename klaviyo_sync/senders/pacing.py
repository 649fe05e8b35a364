"""Pacing requests to Klaviyo's published limits and to its RateLimit-* headers.

Klaviyo counts requests per endpoint in fixed windows (burst: 1 s, steady: 1 min) whose
alignment we cannot see. The limiter keeps, per endpoint and window, the send times of
the last N requests and lets a request go only when the N-th last one is a full window
(plus a margin for network jitter) old: a sliding window. That never puts more than N
requests in ANY interval of the window's length, so no fixed window, however aligned,
sees more than N; and it still reaches N per window on a long run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds added to every window: requests sent 1.000 s apart may arrive closer together.
_MARGIN_S = 0.03


@dataclass(frozen=True)
class Limit:
    burst: int  # requests per 1 s
    steady: int  # requests per 60 s


#: Klaviyo's published limits per (method, path), from its OpenAPI spec
#: (docs/architecture.md, "Klaviyo API facts the senders rely on").
PUBLISHED: dict[str, Limit] = {
    "POST /api/events": Limit(350, 3500),
    "POST /api/event-bulk-create-jobs": Limit(10, 150),
    "POST /api/profile-import": Limit(75, 750),
    "POST /api/profile-bulk-import-jobs": Limit(10, 150),
    "GET /api/profile-bulk-import-jobs/{id}": Limit(10, 150),
    "GET /api/profile-bulk-import-jobs/{id}/import-errors": Limit(10, 150),
    "POST /api/profile-suppression-bulk-create-jobs": Limit(75, 750),
    "POST /api/profile-suppression-bulk-delete-jobs": Limit(75, 750),
    "POST /api/profile-subscription-bulk-create-jobs": Limit(75, 750),
    "POST /api/profile-subscription-bulk-delete-jobs": Limit(75, 750),
    "GET /api/profiles": Limit(75, 750),
    "GET /api/lists": Limit(75, 750),
    "GET /api/events": Limit(350, 3500),
    "GET /api/metrics": Limit(10, 150),
    "GET /api/catalog-items": Limit(350, 3500),
    "GET /api/catalog-variants": Limit(350, 3500),
    "GET /api/catalog-categories": Limit(350, 3500),
    "POST /api/data-privacy-deletion-jobs": Limit(3, 60),
}
# Catalog bulk jobs: every create/update/delete job of categories, items and variants is
# 75/s, 750/min; reading a job back is the same, except delete jobs' (350/s, 3500/min).
for _kind in ("item", "variant", "category"):
    for _action in ("create", "update", "delete"):
        _path = f"/api/catalog-{_kind}-bulk-{_action}-jobs"
        PUBLISHED[f"POST {_path}"] = Limit(75, 750)
        PUBLISHED[f"GET {_path}/{{job_id}}"] = (
            Limit(350, 3500) if _action == "delete" else Limit(75, 750))


class _Window:
    def __init__(self, limit: int, length_s: float) -> None:
        self.limit = limit
        self.length_s = length_s
        self.sent: deque[float] = deque(maxlen=limit)

    def free_at(self) -> float:
        if len(self.sent) < self.limit:
            return 0.0
        return self.sent[0] + self.length_s + _MARGIN_S


class Pacer:
    """Blocks each caller until its endpoint may take another request. Thread-safe."""

    def __init__(self, limits: dict[str, Limit] | None = None, window_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        #: ``limits=None`` paces only by Klaviyo's headers and 429s (a test server).
        self.limits = limits
        self.window_scale = window_scale
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._windows: dict[str, list[_Window]] = {}
        self._blocked_until: dict[str, float] = {}
        self.waited_s = 0.0

    def _windows_for(self, endpoint: str) -> list[_Window]:
        windows = self._windows.get(endpoint)
        if windows is None:
            limit = (self.limits or {}).get(endpoint)
            windows = [] if limit is None else [
                _Window(limit.burst, 1.0 * self.window_scale),
                _Window(limit.steady, 60.0 * self.window_scale),
            ]
            self._windows[endpoint] = windows
        return windows

    def acquire(self, endpoint: str) -> None:
        """Wait until a request to ``endpoint`` is allowed, and count it as sent."""
        while True:
            with self._lock:
                now = self.clock()
                windows = self._windows_for(endpoint)
                ready_at = max([w.free_at() for w in windows]
                               + [self._blocked_until.get(endpoint, 0.0)])
                if ready_at <= now:
                    for w in windows:
                        w.sent.append(now)
                    return
                wait = ready_at - now
            self.waited_s += wait
            self.sleep(wait)

    def observe(self, endpoint: str, remaining: int | None, reset_s: float | None) -> None:
        """Klaviyo said how many requests remain in its steady window and when it resets:
        at zero, hold the endpoint until the reset instead of meeting a 429."""
        if remaining is None or reset_s is None or remaining > 0:
            return
        self.block(endpoint, reset_s)

    def block(self, endpoint: str, for_s: float) -> None:
        """Hold ``endpoint`` for ``for_s`` seconds (a 429's Retry-After)."""
        with self._lock:
            until = self.clock() + max(0.0, for_s)
            self._blocked_until[endpoint] = max(self._blocked_until.get(endpoint, 0.0), until)

    def blocked_for(self, endpoint: str) -> float:
        with self._lock:
            return max(0.0, self._blocked_until.get(endpoint, 0.0) - self.clock())
