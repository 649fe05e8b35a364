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


def iso_utc(moment: datetime, *, to_second: bool = False) -> str:
    """``moment`` (naive UTC or aware) as ISO 8601 with an explicit ``+00:00`` offset.

    ``to_second`` drops the microseconds (what Klaviyo keeps anyway); otherwise they are
    kept, as the state database stores them.
    """
    if moment.tzinfo is None and not (to_second and moment.microsecond):
        return moment.isoformat() + "+00:00"  # the usual case: the payloads' hot path
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if to_second:
        moment = moment.replace(microsecond=0)
    return moment.isoformat() + "+00:00"


def iso_utc_or_none(moment: datetime | None) -> str | None:
    """:func:`iso_utc` of ``moment``, or None for a moment not yet reached (``sent_at``)."""
    return None if moment is None else iso_utc(moment)
