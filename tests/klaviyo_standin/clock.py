"""The stand-in's own clock, immune to freezegun.

Tests of the sender freeze time in their own thread while this server runs in another of
the same process; if the server's rate-limit windows and token expiry followed the frozen
clock they would never move. freezegun swaps module attributes that *are* the real
``time`` functions, so the real ones are kept inside a dict, where it does not look.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

_REAL = {"monotonic": time.monotonic, "time": time.time}


def monotonic() -> float:
    """Seconds on a monotonic clock (for windows, expiry and durations)."""
    return _REAL["monotonic"]()


def now() -> datetime:
    """The real current time, aware, in UTC."""
    return datetime.fromtimestamp(_REAL["time"](), UTC)
