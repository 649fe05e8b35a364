"""Odd input that must be a reject with its reason, never a stall or a crash."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from klaviyo_sync.config import KNOWN_EVENT_TYPES, LogSettings
from klaviyo_sync.exceptions import ParseError
from klaviyo_sync.parsers import LineParser

EVENTS = {name: name for name in KNOWN_EVENT_TYPES}
NOW = datetime(2030, 1, 1)


def parser(fmt: str = "kv", timezone: str = "UTC") -> LineParser:
    return LineParser(LogSettings(format=fmt, timezone=timezone), EVENTS)


@pytest.mark.parametrize(
    "line",
    [
        b"2020-05-15 12:35:32 cancelled customer=10\x0004",
        b"2020-05-15 12:35:32 started.signup customer=1 email=a\x00@example.com",
        b"2020-05-15 12:35:32 cancelled customer=1 reason=\"mov\x00ing\"",
        b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "customer": "1\\u0000"}',
        b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "customer": 1,'
        b' "note": {"deep": ["x\\u0000"]}}',
    ],
)
def test_a_nul_character_in_any_field_is_a_parse_error(line: bytes) -> None:
    fmt = "jsonl" if line.startswith(b"{") else "kv"
    with pytest.raises(ParseError, match="NUL") as caught:
        parser(fmt).parse(line, now=NOW)
    assert caught.value.event_type in EVENTS


@pytest.mark.parametrize(
    "line",
    [
        b"2020-05-15 12:35:32 failed.payment customer=1 amount=" + b"9" * 400,
        b"2020-05-15 12:35:32 started.signup customer=1 value=1" + b"0" * 309 + b".5",
        b'{"time": "2020-05-15 12:35:32", "event": "failed.payment", "customer": 1,'
        b' "amount": 1' + b"0" * 400 + b"}",
        b'{"time": "2020-05-15 12:35:32", "event": "failed.payment", "customer": 1,'
        b' "amount": 1e400}',
    ],
)
def test_an_amount_out_of_the_float_range_is_a_parse_error(line: bytes) -> None:
    fmt = "jsonl" if line.startswith(b"{") else "kv"
    with pytest.raises(ParseError, match="out of range"):
        parser(fmt).parse(line, now=NOW)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_json_nan_or_infinity_anywhere_is_a_parse_error(literal: bytes) -> None:
    line = (b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "customer": 1,'
            b' "score": ' + literal + b"}")
    with pytest.raises(ParseError, match="not valid JSON"):
        parser("jsonl").parse(line, now=NOW)


def test_the_largest_finite_amount_still_serializes_as_json() -> None:
    line = b"2020-05-15 12:35:32 failed.payment customer=1 amount=1" + b"0" * 308
    entry = parser().parse(line, now=NOW)
    assert entry is not None and json.dumps(entry.value, allow_nan=False) == "1e+308"


@pytest.mark.parametrize(
    ("line", "timezone"),
    [
        (b"0001-01-01 00:00:00+01:00 cancelled customer=1", "UTC"),
        (b"0001-01-01T00:00:00+01:00 cancelled customer=1", "UTC"),
        (b"0001-01-01 00:00:00 cancelled customer=1", "Europe/Paris"),
        (b"9999-12-31 23:59:59 cancelled customer=1", "America/New_York"),
        (b"9999-12-31 23:59:59-05:00 cancelled customer=1", "UTC"),
        (b"9999-12-31T23:59:59 cancelled customer=1", "Asia/Tokyo"),
    ],
)
def test_times_at_the_edge_of_the_calendar_are_ordinary_rejects(
        line: bytes, timezone: str) -> None:
    with pytest.raises(ParseError, match=r"before 1990|more than a year in the future"):
        parser(timezone=timezone).parse(line, now=NOW)


def test_a_jsonl_time_at_the_edge_of_the_calendar_is_an_ordinary_reject() -> None:
    line = b'{"time": "9999-12-31 23:59:59", "event": "cancelled", "customer": 1}'
    with pytest.raises(ParseError, match="future"):
        parser("jsonl", "America/New_York").parse(line, now=NOW)


def test_1990_01_01_midnight_exactly_is_refused_like_klaviyo_does() -> None:
    with pytest.raises(ParseError, match="1990"):
        parser().parse(b"1990-01-01 00:00:00 cancelled customer=1", now=NOW)
    assert parser().parse(b"1990-01-01 00:00:01 cancelled customer=1", now=NOW) is not None


@pytest.mark.parametrize(
    "line",
    [
        b"2020-05-15 cancelled customer=1004",
        b"2020-05-15 cancelled",
        b"2020-05-15\tstarted.signup customer=1 email=a@example.com",
    ],
)
def test_an_event_type_one_field_early_is_a_reject_not_noise(line: bytes) -> None:
    p = parser()
    with pytest.raises(ParseError, match="no time of day") as caught:
        p.parse(line, now=NOW)
    assert caught.value.event_type in EVENTS
    chunk = b"2020-05-15 12:00:00 login customer=1\n" + line + b"\n"
    assert [chunk[s:e] for s, e in p.candidates(chunk)] == [line]


def test_a_date_followed_by_an_unsynced_word_is_still_noise() -> None:
    assert parser().parse(b"2020-05-15 login customer=1004", now=NOW) is None
