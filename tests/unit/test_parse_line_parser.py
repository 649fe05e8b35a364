"""LineParser: candidates() finds every event line; identities; Klaviyo's time window."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from klaviyo_sync.config import KNOWN_EVENT_TYPES, LogSettings
from klaviyo_sync.exceptions import ParseError
from klaviyo_sync.parsers import LineParser, line_unique_id

EVENTS = {name: name for name in KNOWN_EVENT_TYPES} | {"gift.sent": "Gift Sent"}
MIXED = [
    b"2020-05-15 12:35:30 login customer=1",
    b"2020-05-15 12:35:32 started.signup customer=1141260 email=k@example.com value=47.95",
    b"2020-05-15 12:35:33 page.view path=/started.signup",
    b'2020-05-15 12:35:34 note text="a cancelled order"',  # the word, not the type
    b"2020-05-15 12:35:35 cancelled\r",  # no fields, CRLF
    b"2020-05-15 12:35:36 cancelled.not customer=2",
    b"2020-05-15 12:35:37 gift.sent customer=3 note=hi",
    b"",
    b"2020-05-15 12:35:38 failed.payment\tcustomer=4 amount=oops",
    b"2020-05-15 12:35:39 cron job=cleanup",
]


def kv_parser() -> LineParser:
    return LineParser(LogSettings(), EVENTS)


def parsed_lines(parser: LineParser, lines: list[bytes]) -> list[bytes]:
    """The lines parse() returns an entry or a ParseError for: the events, naively."""
    found = []
    for line in lines:
        try:
            if parser.parse(line, now=datetime(2030, 1, 1)) is not None:
                found.append(line.rstrip(b"\r"))
        except ParseError:
            found.append(line.rstrip(b"\r"))
    return found


def test_candidates_in_a_mixed_chunk() -> None:
    parser = kv_parser()
    chunk = b"\n".join(MIXED) + b"\n"
    lines = [chunk[start:end] for start, end in parser.candidates(chunk)]
    expected = [MIXED[1], MIXED[4].rstrip(b"\r"), MIXED[6], MIXED[8]]
    # Over-including is allowed, missing is not; here the filter is exact besides MIXED[3].
    assert [line for line in lines if line != MIXED[3]] == expected
    assert parsed_lines(parser, MIXED) == expected


def test_candidates_at_chunk_edges_and_without_final_newline() -> None:
    parser = kv_parser()
    chunk = b"2020-05-15 12:35:35 cancelled"
    assert parser.candidates(chunk) == [(0, len(chunk))]
    assert parser.candidates(b"cancelled\n cancelled") == [(10, 20)]
    assert parser.candidates(b"") == []


def test_regex_candidates_are_every_line() -> None:
    parser = LineParser(
        LogSettings(format="regex", pattern=r"(?P<time>\S+ \S+) (?P<event>\S+)"), EVENTS
    )
    chunk = b"a\r\nbb\n\nccc\n"
    assert [chunk[s:e] for s, e in parser.candidates(chunk)] == [b"a", b"bb", b"", b"ccc"]


def test_jsonl_candidates_find_escaped_spellings() -> None:
    parser = LineParser(LogSettings(format="jsonl"), {"cancelled": "c", "café/x": "d"})
    lines = [
        b'{"time": "2020-05-15 12:35:32", "event": "login"}',
        json.dumps({"time": "2020-05-15 12:35:32", "event": "cancelled"}).encode(),
        json.dumps({"time": "2020-05-15 12:35:32", "event": "café/x"}).encode(),
        json.dumps({"time": "2020-05-15 12:35:32", "event": "café/x"}, ensure_ascii=False)
        .encode(),
        b'{"time": "2020-05-15 12:35:32", "event": "caf\\u00e9\\/x"}',
    ]
    chunk = b"\n".join(lines) + b"\n"
    found = [chunk[s:e] for s, e in parser.candidates(chunk)]
    assert found == lines[1:]
    assert all(parser.parse(line) is not None for line in found)


_noise = st.sampled_from([
    b"2020-05-15 12:35:30 login customer=1",
    b"2020-05-15 12:35:30 page.view url=/cancelled",
    b'2020-05-15 12:35:30 note t="started.signup x"',
    b"\tat cancelled (Foo.java:1)",
    b"",
    b"2020-05-15 12:35:30 started.signups customer=1",
])
_events = st.builds(
    lambda kind, sep, rest, cr: b"2020-05-15" + sep + b"12:35:30" + sep + kind + rest + cr,
    st.sampled_from([t.encode() for t in EVENTS]),
    st.sampled_from([b" ", b"  ", b"\t", b"\x0b", b"\x0c", b"\r", b" \r"]),
    st.sampled_from([b"", b" customer=1", b"\tcustomer=1 amount=x", b' r="a b"', b" bare",
                     b"\x0ccustomer=1", b"\rcustomer=1", b"\x0b"]),
    st.sampled_from([b"", b"\r"]),
)
_junk = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" "))


@settings(max_examples=300)
@given(st.lists(_noise | _events | _junk, max_size=30))
def test_candidates_never_miss_what_parse_finds(lines: list[bytes]) -> None:
    parser = kv_parser()
    chunk = b"".join(line + b"\n" for line in lines)
    found = [chunk[s:e] for s, e in parser.candidates(chunk)]
    expected = parsed_lines(parser, lines)
    remaining = iter(found)  # spans are sorted: expected must be a subsequence
    assert all(any(f == e for f in remaining) for e in expected), (expected, found)


def test_unique_id_is_the_lines_bytes_without_its_ending() -> None:
    parser = kv_parser()
    line = b"2020-05-15 12:35:32 cancelled customer=1"
    ids = {
        parser.parse(line + ending).unique_id  # type: ignore[union-attr]
        for ending in (b"", b"\n", b"\r\n", b"\r")
    }
    assert ids == {line_unique_id(line)}
    assert re.fullmatch(r"log:20200515123532:[0-9a-f]{32}", line_unique_id(line))
    other = parser.parse(line + b" ")
    assert other is not None and other.unique_id not in ids


def test_unique_ids_of_time_ordered_lines_ascend() -> None:
    # So that the queue's unique index is appended to, not written at random places.
    lines = [b"2020-05-15 12:35:3%d cancelled customer=%d" % (i, 9 - i) for i in range(10)]
    ids = [line_unique_id(line) for line in lines]
    assert ids == sorted(ids)
    assert re.fullmatch(r"log:[0-9a-f]{40}", line_unique_id(b'{"event": "cancelled"}'))


def test_unique_id_does_not_depend_on_the_format_settings() -> None:
    line = b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "customer": "1"}'
    a = LineParser(LogSettings(format="jsonl", timezone="UTC"), EVENTS).parse(line)
    b = LineParser(LogSettings(format="jsonl", timezone="Asia/Tokyo"), EVENTS).parse(line)
    assert a is not None and b is not None and a.unique_id == b.unique_id == line_unique_id(line)


@pytest.mark.parametrize(
    "line",
    [b"1989-12-31 23:59:59 cancelled customer=1", b"1970-01-01 00:00:00 cancelled customer=1"],
)
def test_times_before_1990_are_refused(line: bytes) -> None:
    with pytest.raises(ParseError, match="before 1990: Klaviyo refuses it") as caught:
        kv_parser().parse(line)
    assert caught.value.event_type == "cancelled"


def test_a_local_time_after_1990_in_utc_terms_is_checked_in_utc() -> None:
    # 1990-01-01 00:30 in Paris is 1989-12-31 23:30 UTC: Klaviyo would refuse it.
    parser = LineParser(LogSettings(timezone="Europe/Paris"), EVENTS)
    with pytest.raises(ParseError, match="before 1990"):
        parser.parse(b"1990-01-01 00:30:00 cancelled customer=1")
    assert parser.parse(b"1990-01-01 01:30:00 cancelled customer=1") is not None


@freeze_time("2024-06-01 12:00:00")
def test_times_more_than_a_year_ahead_are_refused() -> None:
    parser = kv_parser()
    assert parser.parse(b"2025-05-31 12:00:00 cancelled customer=1") is not None
    with pytest.raises(ParseError, match="more than a year in the future: Klaviyo refuses it"):
        parser.parse(b"2025-06-02 12:00:00 cancelled customer=1")


def test_now_argument_bounds_the_future() -> None:
    parser = kv_parser()
    line = b"2031-01-01 00:00:00 cancelled customer=1"
    assert parser.parse(line, now=datetime(2030, 6, 1)) is not None
    with pytest.raises(ParseError, match="future"):
        parser.parse(line, now=datetime(2029, 6, 1))


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        LineParser(LogSettings(format="xml"), EVENTS)


_json_values = st.none() | st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=2)
_json_lines = st.builds(
    lambda event, fields, ascii_only, cut: json.dumps(
        {"time": "2020-05-15 12:35:32", "event": event, **fields}, ensure_ascii=ascii_only
    ).encode()[:cut],
    st.sampled_from([*EVENTS, "login", "page.view", "cancelled.x"]),
    st.dictionaries(st.sampled_from(["customer", "email", "note", "amount", "x"]), _json_values),
    st.booleans(),
    st.sampled_from([None, None, None, -1, 30]),  # sometimes truncated: broken JSON
)


@settings(max_examples=200)
@given(st.lists(_json_lines | _junk, max_size=12))
def test_jsonl_candidates_never_miss_what_parse_finds(lines: list[bytes]) -> None:
    parser = LineParser(LogSettings(format="jsonl"), EVENTS)
    chunk = b"".join(line + b"\n" for line in lines)
    found = [chunk[s:e] for s, e in parser.candidates(chunk)]
    expected = parsed_lines(parser, lines)
    remaining = iter(found)
    assert all(any(f == e for f in remaining) for e in expected), (expected, found)


def test_metric_names_come_from_settings() -> None:
    parser = LineParser(LogSettings(), {"started.signup": "Started Signup"})
    entry = parser.parse(b"2020-05-15 12:35:32 started.signup customer=1")
    assert entry is not None and entry.metric == "Started Signup"
    assert parser.parse(b"2020-05-15 12:35:32 cancelled customer=1") is None


@pytest.mark.parametrize("fmt", ["kv", "jsonl"])
def test_a_byte_order_mark_does_not_hide_the_first_line(fmt: str) -> None:
    parser = LineParser(LogSettings(format=fmt), EVENTS)
    line = (
        b"2020-05-15 12:35:32 cancelled customer=1" if fmt == "kv"
        else b'{"time": "2020-05-15 12:35:32", "event": "cancelled", "customer": "1"}'
    )
    chunk = b"\xef\xbb\xbf" + line + b"\n"
    assert parser.candidates(chunk) == [(0, len(chunk) - 1)]
    entry = parser.parse(chunk)
    assert entry is not None and entry.customer_id == "1"


def test_same_bytes_same_identity_whichever_format_reads_them() -> None:
    line = b"2020-05-15 12:35:32 cancelled customer=1 reason=moving"
    kv = kv_parser().parse(line + b"\r\n")
    rx = LineParser(
        LogSettings(format="regex", pattern=r"(?P<time>\S+ \S+) (?P<event>\S+) (?P<rest>.*)"),
        EVENTS,
    ).parse(line + b"\n")
    assert kv is not None and rx is not None
    assert kv.unique_id == rx.unique_id == line_unique_id(line)
    assert kv == rx
