"""The default ``kv`` line format: ``<date> <time> <event type> key=value ...``.

::

    2020-05-15 12:35:32 started.signup customer=1141260 email=k@example.com value=47.95
    2020-05-15 12:40:28 cancelled customer=1141260 reason="moving \\"far\\" away"

- Fields are separated by one or more spaces or tabs. A value runs to the next space,
  or is double-quoted; inside quotes ``\\"`` is a quote and ``\\\\`` a backslash; any
  other backslash is kept as written (Windows paths survive). ``key=`` is an empty value.
- A bare word without ``=``, an empty key, an unterminated quote or text glued to a
  closing quote make the line a parse error (for a synced event type): guessing what
  the writer meant would put wrong data in front of customers.
- A repeated key: the last one wins (as in logfmt).
- The time may also be one ISO 8601 token (``2020-05-15T12:35:32+02:00``).
- A line that does not start with a digit is not an entry (a continuation line, a
  banner) and is skipped like any other type.
- A synced event type one field early (``2020-05-15 cancelled ...``: no time of day)
  is a parse error, not noise.
- Invalid UTF-8 in a value becomes U+FFFD; in a key it is a parse error (see mapping for
  the customer id and email). A key holding a literal U+FFFD is refused the same way:
  after decoding the two cannot be told apart, and neither is a meaningful key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from klaviyo_sync.exceptions import ParseError

# One key=value pair (groups 1-3: key, quoted value, bare value) or, failing that, one
# run of non-blank text (group 4) that is not a pair: the caller reports it. findall
# therefore skips only blanks, and every other character is accounted for.
_PAIR = re.compile(
    r'([^ \t="]+)=(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^ \t"][^ \t]*|))(?=[ \t]|$)'
    r"|([^ \t]+)"
)
_ESCAPE = re.compile(r'\\(["\\])')


def parse_pairs(text: str) -> dict[str, str]:
    """``key=value`` pairs of a line's remainder; raises ValueError naming the problem."""
    if '"' not in text and "\t" not in text:
        # Fast path, most lines: no quotes, so pairs are exactly the space-separated words.
        fields: dict[str, str] = {}
        for word in text.split(" "):
            if word:
                key, eq, value = word.partition("=")
                if not (eq and key):
                    break  # the full scanner below explains the problem
                fields[key] = value
        else:
            if "\ufffd" in text:
                _check_keys(fields)
            return fields
    fields = {}
    for key, quoted, bare, stray in _PAIR.findall(text):
        if stray:
            raise ValueError(_explain(text))
        if quoted:
            fields[key] = _ESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            fields[key] = bare
    _check_keys(fields)
    return fields


def _check_keys(fields: dict[str, str]) -> None:
    for key in fields:
        # The line was decoded with errors="replace": a bad byte and a literal U+FFFD
        # look the same here, and neither makes a meaningful key.
        if "\ufffd" in key:
            raise ValueError(f"invalid UTF-8 in key {key!r}")


def render_pairs(fields: Iterable[tuple[str, Any]]) -> str:
    """The inverse of :func:`parse_pairs` (tests, the demo): quotes values when needed."""
    return " ".join(f"{key}={render_value(str(value))}" for key, value in fields)


def render_value(value: str) -> str:
    """A value as the kv format writes it: bare if it can be, else quoted and escaped."""
    if value and not _NEEDS_QUOTES.search(value) and not value.startswith('"'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_NEEDS_QUOTES = re.compile(r"[\s\\]")


def _explain(text: str) -> str:
    found = next(m for m in _PAIR.finditer(text) if m.group(4))
    stray = found.group(4)
    key, eq, _ = stray.partition("=")
    if not eq:
        return f"{stray!r} is not key=value"
    if not key:
        return f"empty key in {stray!r}"
    if '"' in key:
        return f"quote in key {key!r}"
    # The stray run starts where a quoted value failed: unterminated, or followed by text.
    rest = text[found.start(4) + len(key) + 1:]
    match = re.match(r'"([^"\\]*(?:\\.[^"\\]*)*)"', rest)
    if match is None:
        return f"unterminated quoted value for key {key!r}"
    return f"text after the closing quote of key {key!r}: {rest[match.end():match.end() + 20]!r}"


class KvFormat:
    """Reads one kv line into (event type, time text, fields), or None to skip it."""

    def __init__(self, synced: Iterable[str]) -> None:
        self._synced = {name.encode("utf-8"): name for name in synced}

    def read(self, line: bytes) -> tuple[str, str, dict[str, Any]] | None:
        """None for a line that is not a synced event; ParseError for a broken one."""
        if not line[:1].isdigit():
            return None
        parts = line.split(None, 3)
        if b"T" in parts[0]:  # one ISO 8601 token: <time> <event type> ...
            parts = line.split(None, 2)
            parts.insert(1, b"")
        event_type = self._synced.get(parts[2]) if len(parts) > 2 else None
        if event_type is None:
            early = self._synced.get(parts[1]) if len(parts) > 1 else None
            if early is not None:
                # "2020-05-15 cancelled customer=1": a synced type where the time should
                # be. Skipping it as noise would lose an event without a word.
                raise ParseError(
                    f"no time of day: {early!r} sits where the time should be", early)
            return None
        try:
            when = (parts[0] + b" " + parts[1] if parts[1] else parts[0]).decode("ascii")
        except UnicodeDecodeError:
            raise ParseError("the time is not plain ASCII", event_type) from None
        rest = parts[3] if len(parts) == 4 else b""
        try:
            text = rest.decode("utf-8")
        except UnicodeDecodeError:
            text = rest.decode("utf-8", "replace")
        try:
            return event_type, when, parse_pairs(text)
        except ValueError as exc:
            raise ParseError(str(exc), event_type) from None
