"""The one place that asks the time: naive UTC datetimes, as the state database stores them.

Everything that depends on the time takes the current time from here (or as an argument),
so freezegun controls it in tests.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo (the state database's convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_naive_utc(moment: datetime) -> datetime:
    """An aware datetime converted to naive UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 with an explicit UTC offset, to the second (Klaviyo truncates anyway)."""
    return to_naive_utc(moment).replace(microsecond=0).isoformat() + "+00:00"
