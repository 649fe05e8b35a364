"""clock.iso_utc: the one spelling of a UTC moment in JSON output and Klaviyo payloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from klaviyo_sync.clock import iso_utc, iso_utc_or_none

NAIVE = datetime(2026, 3, 29, 1, 30, 5, 123456)
EAST = timezone(timedelta(hours=2))


@pytest.mark.parametrize("moment", [NAIVE, NAIVE.replace(microsecond=0),
                                    datetime(2026, 1, 1), datetime(1999, 12, 31, 23, 59, 59)])
def test_naive_moment_matches_the_hand_written_spelling(moment: datetime) -> None:
    assert iso_utc(moment) == moment.isoformat() + "+00:00"


def test_microseconds_are_kept_unless_asked_to_drop_them() -> None:
    assert iso_utc(NAIVE) == "2026-03-29T01:30:05.123456+00:00"
    assert iso_utc(NAIVE, to_second=True) == "2026-03-29T01:30:05+00:00"
    assert iso_utc(NAIVE.replace(microsecond=0), to_second=True) == "2026-03-29T01:30:05+00:00"


def test_aware_moment_is_converted_to_utc_not_relabelled() -> None:
    local = datetime(2026, 3, 29, 3, 30, 5, 123456, tzinfo=EAST)
    assert iso_utc(local) == "2026-03-29T01:30:05.123456+00:00"
    assert iso_utc(local, to_second=True) == "2026-03-29T01:30:05+00:00"
    assert iso_utc(NAIVE.replace(tzinfo=UTC)) == iso_utc(NAIVE)


def test_optional_variant_passes_none_through() -> None:
    assert iso_utc_or_none(None) is None
    assert iso_utc_or_none(NAIVE) == "2026-03-29T01:30:05.123456+00:00"
