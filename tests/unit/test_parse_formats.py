"""The JSON-lines and regex formats read the same events as kv."""

from __future__ import annotations

import json

import pytest

from klaviyo_sync.config import KNOWN_EVENT_TYPES, LogSettings
from klaviyo_sync.exceptions import ParseError
from klaviyo_sync.parsers import LineParser

EVENTS = {name: name for name in KNOWN_EVENT_TYPES}
PATTERN = (
    r"\[(?P<time>[^\]]+)\] (?P<event>\S+) user=(?P<customer>\d+)?"
    r"(?: <(?P<email>[^>]*)>)?(?: order#(?P<order>\S+))?(?P<rest>.*)$"
)


def jsonl(zone: str = "UTC") -> LineParser:
    return LineParser(LogSettings(format="jsonl", timezone=zone), EVENTS)


def regex(pattern: str = PATTERN) -> LineParser:
    return LineParser(LogSettings(format="regex", pattern=pattern), EVENTS)


def test_jsonl_event() -> None:
    line = json.dumps({
        "time": "2020-05-15 12:35:32", "event": "failed.payment", "customer": 1141260,
        "email": "k@example.com", "amount": 19.99, "order": "A-1",
        "cart": {"items": [1, 2]}, "flag": True,
    }).encode()
    entry = jsonl(zone="Europe/London").parse(line + b"\n")
    assert entry is not None
    assert entry.occurred_at.isoformat() == "2020-05-15T11:35:32"
    assert (entry.customer_id, entry.email, entry.value) == ("1141260", "k@example.com", 19.99)
    assert entry.properties == {"OrderId": "A-1", "cart": {"items": [1, 2]}, "flag": True}


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("2020-05-15T12:35:32+02:00", "2020-05-15T10:35:32"),
        ("2020-05-15T12:35:32Z", "2020-05-15T12:35:32"),
        ("2020-05-15T12:35:32", "2020-05-15T16:35:32"),
        (1589546132, "2020-05-15T12:35:32"),
        (1589546132.5, "2020-05-15T12:35:32.500000"),
    ],
)
def test_jsonl_times(time: object, expected: str) -> None:
    line = json.dumps({"time": time, "event": "cancelled", "customer": "1"}).encode()
    entry = jsonl(zone="America/New_York").parse(line)
    assert entry is not None and entry.occurred_at.isoformat() == expected


@pytest.mark.parametrize(
    "line",
    [
        b'{"time": "2020-05-15 12:35:32", "event": "login", "customer": 1}',
        b'{"time": "2020-05-15 12:35:32", "customer": 1}',
        b'["started.signup"]',
        b"plain text mentioning \"started.signup\"",
        b'{"time": "2020-05-15 12:35:32", "event": ["cancelled"]}',
        b"",
    ],
)
def test_jsonl_other_lines_are_skipped(line: bytes) -> None:
    assert jsonl().parse(line) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "customer": 1', "not valid JSON"),
        (b'{"event": "cancelled", "customer": 1}', 'no "time"'),
        (b'{"time": "2021-02-30 10:00:00", "event": "cancelled"}', "impossible date"),
        (b'{"time": true, "event": "cancelled"}', "not a time"),
        (b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "customer": {"id": 1}}',
         "customer: expected text"),
        (b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "amount": NaN}',
         "NaN is not a JSON number"),
        (b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "email": "a\xff@b.c"}',
         "email: invalid UTF-8"),
    ],
)
def test_jsonl_broken_lines(line: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as caught:
        jsonl().parse(line)
    assert caught.value.event_type == "cancelled"


def test_jsonl_invalid_utf8_in_a_value_is_replaced() -> None:
    entry = jsonl().parse(
        b'{"time": "2020-05-15 12:35:32", "event": "contact.form", "message": "caf\xe9"}'
    )
    assert entry is not None and entry.properties["Message"] == "caf\ufffd"


def test_regex_named_groups_and_rest() -> None:
    entry = regex().parse(
        b'[2020-05-15 12:35:32] failed.payment user=42 <a@example.com> order#A-9 amount=5.5 '
        b'reason="card declined"\r\n'
    )
    assert entry is not None
    assert (entry.customer_id, entry.email, entry.value) == ("42", "a@example.com", 5.5)
    assert entry.properties == {"OrderId": "A-9", "Reason": "card declined"}


def test_regex_group_wins_over_rest_and_missing_groups_are_absent() -> None:
    entry = regex().parse(b"[2020-05-15 12:35:32] shipping.email user= order#B-1 order=X")
    assert entry is not None
    assert entry.customer_id is None and entry.email is None
    assert entry.properties == {"OrderId": "B-1"}


def test_regex_skips_what_it_does_not_match_or_sync() -> None:
    assert regex().parse(b"something else entirely") is None
    assert regex().parse(b"[2020-05-15 12:35:32] login user=1") is None


def test_regex_broken_rest_and_time_are_parse_errors() -> None:
    with pytest.raises(ParseError, match="unterminated") as caught:
        regex().parse(b'[2020-05-15 12:35:32] cancelled user=1 reason="open')
    assert caught.value.event_type == "cancelled"
    with pytest.raises(ParseError, match="impossible date"):
        regex().parse(b"[2021-02-30 12:35:32] cancelled user=1")
    optional_time = regex(r"(?:(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) )?(?P<event>\S+)")
    with pytest.raises(ParseError, match="time group matched nothing"):
        optional_time.parse(b"cancelled")


def test_the_same_event_in_three_formats_maps_alike() -> None:
    kv = LineParser(LogSettings(), EVENTS).parse(
        b"2020-05-15 12:35:32 cancelled customer=42 reason=moving"
    )
    js = jsonl().parse(
        b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "customer": "42", '
        b'"reason": "moving"}'
    )
    rx = regex().parse(b"[2020-05-15 12:35:32] cancelled user=42 reason=moving")
    assert kv is not None and js is not None and rx is not None
    fields = ("event_type", "occurred_at", "customer_id", "email", "properties", "value")
    assert {f: getattr(kv, f) for f in fields} == {f: getattr(js, f) for f in fields}
    assert {f: getattr(kv, f) for f in fields} == {f: getattr(rx, f) for f in fields}
    # Different bytes, different identities: the id is the line's, not the event's.
    assert len({kv.unique_id, js.unique_id, rx.unique_id}) == 3
