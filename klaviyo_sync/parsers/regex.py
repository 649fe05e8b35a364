"""The ``regex`` line format: ``[log] pattern``, a regular expression with named groups.

- ``(?P<time>...)`` and ``(?P<event>...)`` are required; ``(?P<customer>...)`` and
  ``(?P<email>...)`` identify the profile; ``(?P<rest>...)`` holds ``key=value`` pairs
  read as in the kv format; any other named group is a field under its own name (so a
  group named ``amount`` or ``reason`` is mapped like the kv key). A named group wins
  over a pair of the same name in ``rest``; a group that did not take part is absent.
- The pattern is matched at the start of the line (``re.match``); it need not consume
  all of it. A line it does not match is not an entry and is skipped: with a free-form
  pattern there is no telling a broken event from noise.
- Invalid UTF-8 becomes U+FFFD before matching.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from klaviyo_sync.exceptions import ParseError
from klaviyo_sync.parsers.kv import parse_pairs

_SPECIAL_GROUPS = frozenset({"time", "event", "rest"})


class RegexFormat:
    """Reads one line with a named-group pattern into (event type, time, fields)."""

    def __init__(self, pattern: str, synced: Iterable[str]) -> None:
        self._pattern = re.compile(pattern)
        self._synced = frozenset(synced)
        self._field_groups = [g for g in self._pattern.groupindex if g not in _SPECIAL_GROUPS]
        self._has_rest = "rest" in self._pattern.groupindex

    def read(self, line: bytes) -> tuple[str, Any, dict[str, Any]] | None:
        """None for a line that is not a synced event; ParseError for a broken one."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("utf-8", "replace")
        match = self._pattern.match(text)
        if match is None:
            return None
        event_type = match.group("event")
        if event_type not in self._synced:
            return None
        when = match.group("time")
        if not when:
            raise ParseError("the pattern's time group matched nothing", event_type)
        fields: dict[str, Any] = {}
        rest = match.group("rest") if self._has_rest else None
        if rest:
            try:
                fields = parse_pairs(rest.strip(" \t"))
            except ValueError as exc:
                raise ParseError(str(exc), event_type) from None
        for name in self._field_groups:
            value = match.group(name)
            if value is not None:
                fields[name] = value
        return event_type, when, fields
