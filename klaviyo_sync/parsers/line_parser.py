"""LineParser: bytes of the business log -> LogEntry, for the format in settings.

Two steps, so the tailer spends almost nothing on the lines it does not sync:
:meth:`LineParser.candidates` finds, with ``bytes.find`` over a whole chunk, the lines
that may hold a synced event type; :meth:`LineParser.parse` reads one of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from klaviyo_sync.clock import to_naive_utc, utcnow
from klaviyo_sync.config import LogSettings
from klaviyo_sync.exceptions import ParseError
from klaviyo_sync.parsers.entry import LogEntry, stripped_line_id
from klaviyo_sync.parsers.jsonl import JsonlFormat
from klaviyo_sync.parsers.kv import KvFormat
from klaviyo_sync.parsers.mapping import EntryFields, EventMapping
from klaviyo_sync.parsers.regex import RegexFormat
from klaviyo_sync.parsers.times import LogTimezone

#: Klaviyo refuses event times not after 1990-01-01 00:00:00 UTC or more than a year
#: ahead (docs/architecture.md, "Klaviyo API facts the senders rely on").
EARLIEST_TIME = datetime(1990, 1, 1)
LATEST_AHEAD = timedelta(days=365)

_NL = 0x0A
_CR = 0x0D
# Bytes that may surround an event type in a kv line: what bytes.split() splits on.
_KV_BEFORE = frozenset(b" \t\r\x0b\x0c")
_KV_AFTER = frozenset(b" \t\r\n\x0b\x0c")
_BOM = b"\xef\xbb\xbf"


class LineParser:
    """Parses the lines of one log (format, time zone and synced types from settings)."""

    def __init__(
        self, log: LogSettings, events: Mapping[str, str], default_currency: str = "USD",
        unique_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.timezone = LogTimezone(log.timezone)
        self.mapping = EventMapping(events, default_currency, unique_ids)
        self.format = log.format
        self._clock_read_at = float("-inf")
        self._clock_latest = datetime.min
        # The latest time for the last ``now`` given: the ingest passes one per chunk.
        self._latest_for: tuple[datetime | None, datetime] = (None, datetime.min)
        synced = list(events)
        self._reader: KvFormat | JsonlFormat | RegexFormat
        if log.format == "kv":
            self._reader = KvFormat(synced)
            self._tokens = sorted({name.encode("utf-8") for name in synced})
        elif log.format == "jsonl":
            self._reader = JsonlFormat(synced)
            self._tokens = sorted(_json_tokens(synced))
        elif log.format == "regex":
            self._reader = RegexFormat(log.pattern, synced)
            self._tokens = []
        else:
            raise ValueError(f"unknown log format {log.format!r}")

    def parse(self, line: bytes, now: datetime | None = None) -> LogEntry | None:
        """The entry on ``line``, None if it is not a synced event type.

        Raises ParseError (with ``event_type``) for a synced line that cannot become an
        event. ``now`` (default: the clock) bounds the time Klaviyo would accept.
        """
        fields = self.entry_fields(line, now)
        return None if fields is None else LogEntry(*fields)

    def entry_fields(self, line: bytes, now: datetime | None = None) -> EntryFields | None:
        """:meth:`parse`, the entry's fields as a plain tuple in :class:`LogEntry`'s order
        (what the bulk ingest turns into a row, without building the object)."""
        line = line.rstrip(b"\r\n")
        # A UTF-8 byte order mark (first line of a file some editors saved) is not content.
        record = self._reader.read(line[3:] if line.startswith(_BOM) else line)
        if record is None:
            return None
        event_type, when, fields = record
        if b"\x00" in line or b"\\u0000" in line:  # raw, or escaped in a JSON string
            _refuse_nul(fields, event_type)
        occurred_at = self._occurred_at(when, event_type, now)
        return self.mapping.entry_fields(
            stripped_line_id(line), event_type, occurred_at, fields, self.timezone, len(line)
        )

    def candidates(self, chunk: bytes) -> list[tuple[int, int]]:
        """(start, end) of the lines of ``chunk`` that may be synced events.

        ``chunk`` holds complete lines. ``end`` excludes the newline and a carriage
        return before it. May include lines :meth:`parse` then skips; never omits one
        it would return or reject.
        """
        if self.format == "regex":
            return _all_lines(chunk)
        starts: set[int] = set()
        kv = self.format == "kv"
        size = len(chunk)
        find, rfind = chunk.find, chunk.rfind
        for token in self._tokens:
            width = len(token)
            pos = find(token)
            while pos != -1:
                end = pos + width
                if kv and not (
                    pos > 0 and chunk[pos - 1] in _KV_BEFORE
                    and (end == size or chunk[end] in _KV_AFTER)
                ):
                    pos = find(token, pos + 1)
                    continue
                starts.add(rfind(b"\n", 0, pos) + 1)
                line_end = find(b"\n", end)
                if line_end == -1:
                    break
                pos = find(token, line_end)
        spans = []
        for start in sorted(starts):
            end = find(b"\n", start)
            if end == -1:
                end = size
            if end > start and chunk[end - 1] == _CR:
                end -= 1
            spans.append((start, end))
        return spans

    def _occurred_at(self, when: Any, event_type: str, now: datetime | None) -> datetime:
        try:
            if isinstance(when, str):
                occurred_at = self.timezone.parse(when)
            elif isinstance(when, int | float) and not isinstance(when, bool):
                occurred_at = self.timezone.from_epoch(when)
            else:
                raise ValueError(f"not a time: {when!r}")
        except ValueError as exc:
            raise ParseError(str(exc), event_type) from None
        except OverflowError:
            # Year 1 or 9999 moved across midnight by a zone: outside what datetime holds,
            # and far outside Klaviyo's window either way.
            raise ParseError(_outside_calendar(when), event_type) from None
        if occurred_at <= EARLIEST_TIME:
            raise ParseError(
                f"time {occurred_at.isoformat(' ')} UTC is before 1990: Klaviyo refuses it"
                if occurred_at < EARLIEST_TIME else
                "time 1990-01-01 00:00:00 UTC: Klaviyo refuses it, it accepts only times "
                "after it",
                event_type,
            )
        if now is None:
            latest = self._latest_clock()
        else:
            given, latest = self._latest_for
            if now is not given:
                latest = to_naive_utc(now) + LATEST_AHEAD
                self._latest_for = (now, latest)
        if occurred_at > latest:
            raise ParseError(
                f"time {occurred_at.isoformat(' ')} UTC is more than a year in the future: "
                "Klaviyo refuses it",
                event_type,
            )
        return occurred_at


    def _latest_clock(self) -> datetime:
        # Asking the clock for a datetime costs more than the rest of a line's time
        # checks; a bound stale by under a second does not matter a year out.
        now_s = time.time()
        if not -1.0 < now_s - self._clock_read_at < 1.0:
            self._clock_read_at = now_s
            self._clock_latest = utcnow() + LATEST_AHEAD
        return self._clock_latest


def _outside_calendar(when: Any) -> str:
    text = str(when)
    if text[:4] < "1990":
        return f"time {text!r} is before 1990: Klaviyo refuses it"
    return f"time {text!r} is more than a year in the future: Klaviyo refuses it"


def _refuse_nul(fields: Mapping[str, Any], event_type: str) -> None:
    """ParseError naming the first field holding a NUL character: PostgreSQL cannot store
    one in text and Klaviyo would not show it, so the line is a reject on every backend."""
    for key, value in fields.items():
        if "\x00" in key or _holds_nul(value):
            raise ParseError(f"{key!r}: holds a NUL character", event_type)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _json_tokens(synced: list[str]) -> set[bytes]:
    """Every way a JSON writer may spell each event type as a string."""
    tokens = set()
    for name in synced:
        for ascii_only in (True, False):
            spelled = json.dumps(name, ensure_ascii=ascii_only)
            tokens.add(spelled.encode("utf-8"))
            tokens.add(spelled.replace("/", "\\/").encode("utf-8"))
    return tokens


def _all_lines(chunk: bytes) -> list[tuple[int, int]]:
    spans = []
    start = 0
    size = len(chunk)
    while start < size:
        end = chunk.find(b"\n", start)
        if end == -1:
            end = size
        next_start = end + 1
        if end > start and chunk[end - 1] == _CR:
            end -= 1
        spans.append((start, end))
        start = next_start
    return spans
