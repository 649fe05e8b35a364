"""Log times: local to [log] timezone -> naive UTC, DST gaps and overlaps, offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klaviyo_sync.parsers.times import LogTimezone


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("zone", "local", "expected_utc", "gaps", "overlaps"),
    [
        # Spring forward: 02:00-03:00 never happened; read with the offset before (EST).
        ("America/New_York", "2021-03-14 02:30:00", "2021-03-14 07:30:00", 1, 0),
        ("America/New_York", "2021-03-14 01:59:59", "2021-03-14 06:59:59", 0, 0),
        ("America/New_York", "2021-03-14 03:00:00", "2021-03-14 07:00:00", 0, 0),
        # Fall back: 01:00-02:00 happened twice; the first time (EDT) is taken.
        ("America/New_York", "2021-11-07 01:30:00", "2021-11-07 05:30:00", 0, 1),
        ("America/New_York", "2021-11-07 02:00:00", "2021-11-07 07:00:00", 0, 0),
        ("Europe/London", "2021-03-28 01:30:00", "2021-03-28 01:30:00", 1, 0),
        ("Europe/London", "2021-10-31 01:30:00", "2021-10-31 00:30:00", 0, 1),
        ("Europe/London", "2021-07-01 12:00:00", "2021-07-01 11:00:00", 0, 0),
        ("Europe/London", "2021-01-01 12:00:00", "2021-01-01 12:00:00", 0, 0),
        ("UTC", "2021-03-14 02:30:00", "2021-03-14 02:30:00", 0, 0),
    ],
)
def test_local_times_to_utc(
    zone: str, local: str, expected_utc: str, gaps: int, overlaps: int
) -> None:
    timezone = LogTimezone(zone)
    assert timezone.parse(local) == utc(expected_utc)
    assert (timezone.gaps, timezone.overlaps) == (gaps, overlaps)
    # The same text again (lines of one second): the same time, and a gap or an overlap
    # is counted once per line, not once per distinct text.
    assert timezone.parse(local) == utc(expected_utc)
    assert (timezone.gaps, timezone.overlaps) == (2 * gaps, 2 * overlaps)


def test_a_repeated_time_follows_the_text_not_the_last_result() -> None:
    timezone = LogTimezone("Europe/London")
    for text, expected in [("2021-07-01 12:00:00", "2021-07-01 11:00:00"),
                           ("2021-07-01 12:00:00", "2021-07-01 11:00:00"),
                           ("2021-07-01T12:00:00Z", "2021-07-01 12:00:00"),
                           ("2021-01-01 12:00:00", "2021-01-01 12:00:00"),
                           ("2021-07-01 12:00:00", "2021-07-01 11:00:00")]:
        assert timezone.parse(text) == utc(expected)
    with pytest.raises(ValueError, match="not a valid date and time"):
        timezone.parse("")  # not mistaken for the empty memory of a new converter


def test_a_transition_day_outside_the_change_uses_the_right_offset() -> None:
    timezone = LogTimezone("America/New_York")
    assert timezone.parse("2021-03-14 00:10:00") == utc("2021-03-14 05:10:00")
    assert timezone.parse("2021-03-14 23:10:00") == utc("2021-03-15 03:10:00")
    assert (timezone.gaps, timezone.overlaps) == (0, 0)


@pytest.mark.parametrize(
    ("text", "expected_utc"),
    [
        ("2020-05-15T12:35:32+02:00", "2020-05-15 10:35:32"),
        ("2020-05-15T12:35:32Z", "2020-05-15 12:35:32"),
        ("2020-05-15 12:35:32-0500", "2020-05-15 17:35:32"),
        ("2020-05-15 12:35:32.250", "2020-05-15 16:35:32.250"),
        ("2020-05-15T12:35:32", "2020-05-15 16:35:32"),
    ],
)
def test_iso_forms_and_offsets(text: str, expected_utc: str) -> None:
    assert LogTimezone("America/New_York").parse(text) == utc(expected_utc)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2021-02-30 10:00:00", "impossible date"),
        ("2021-13-01 10:00:00", "impossible date"),
        ("2021-01-01 24:00:01", "not a valid date and time|impossible"),
        ("yesterday 10:00", "not a valid date and time"),
        ("2021-01-01", "no time of day"),
    ],
)
def test_impossible_times_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        LogTimezone("Europe/London").parse(text)


def test_epoch_seconds_are_utc() -> None:
    assert LogTimezone("Asia/Tokyo").from_epoch(1589546132) == utc("2020-05-15 12:35:32")
    with pytest.raises(ValueError, match="not a valid Unix time"):
        LogTimezone("UTC").from_epoch(1e20)


def test_local_date_follows_the_zone() -> None:
    timezone = LogTimezone("America/Los_Angeles")
    assert timezone.local_date(utc("2021-06-02 03:00:00")).isoformat() == "2021-06-01"


@pytest.mark.parametrize(
    "zone",
    ["America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago",
     "Asia/Kolkata", "Pacific/Chatham"],
)
@given(
    wall=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)),
)
def test_cached_offsets_agree_with_zoneinfo_fold_0(zone: str, wall: datetime) -> None:
    timezone = LogTimezone(zone)
    expected = wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC).replace(tzinfo=None)
    assert timezone.wall_to_utc(wall) == expected
    # and again once the day is cached, and for its neighbours
    assert timezone.wall_to_utc(wall) == expected
    later = wall + timedelta(hours=7)
    assert timezone.wall_to_utc(later) == (
        later.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC).replace(tzinfo=None)
    )


@pytest.mark.parametrize(
    "zone", ["America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago"]
)
def test_every_quarter_hour_of_a_year_agrees_with_zoneinfo(zone: str) -> None:
    # Random datetimes rarely land on the two transition days; sweep them all.
    timezone = LogTimezone(zone)
    tz = ZoneInfo(zone)
    wall = datetime(2021, 1, 1)
    mismatches = []
    while wall.year == 2021:
        expected = wall.replace(tzinfo=tz).astimezone(UTC).replace(tzinfo=None)
        if timezone.wall_to_utc(wall) != expected:
            mismatches.append(wall)
        wall += timedelta(minutes=15)
    assert mismatches == []
    assert timezone.gaps >= 1 and timezone.overlaps >= 1
