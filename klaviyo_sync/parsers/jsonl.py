"""The ``jsonl`` line format: one JSON object per line.

::

    {"time": "2020-05-15 12:35:32", "event": "started.signup", "customer": 1141260, ...}

- ``event`` names the event type; ``time`` is ISO 8601 (with an offset, which wins, or
  without, then local to ``[log] timezone``) or Unix seconds. Every other member is a
  field, mapped like a kv pair; nested values pass through as they are.
- A line that is not valid JSON is a parse error only when it still visibly names a
  synced event type (``"event": "cancelled"``); otherwise it is not an entry. Anything
  that is not an object, or has no synced ``event``, is skipped.
- Invalid UTF-8 becomes U+FFFD before decoding (see mapping for the customer id and
  email, where it is an error).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from klaviyo_sync.exceptions import ParseError

#: Finds the event type in a line json could not decode, to tell a broken event apart
#: from noise.
_EVENT_MEMBER = re.compile(r'"event"\s*:\s*"([^"\\]*)"')


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


#: json.loads() takes NaN and Infinity, which no JSON encoder downstream may write back.
_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode


class JsonlFormat:
    """Reads one JSON line into (event type, time, fields), or None to skip it."""

    def __init__(self, synced: Iterable[str]) -> None:
        self._synced = frozenset(synced)

    def read(self, line: bytes) -> tuple[str, Any, dict[str, Any]] | None:
        """None for a line that is not a synced event; ParseError for a broken one."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("utf-8", "replace")
        try:
            obj = _decode(text)
        except ValueError as exc:
            match = _EVENT_MEMBER.search(text)
            if match and match.group(1) in self._synced:
                raise ParseError(f"not valid JSON: {exc}", match.group(1)) from None
            return None
        if not isinstance(obj, dict):
            return None
        event_type = obj.pop("event", None)
        if not isinstance(event_type, str) or event_type not in self._synced:
            return None
        if "time" not in obj:
            raise ParseError('no "time" member', event_type)
        when = obj.pop("time")
        return event_type, when, obj
