"""LogEntry: one synced event read from the business log, ready to be enqueued."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from klaviyo_sync.queue.models import NewEvent

#: Prefix of every log event's unique_id, so ids from the log never collide with the
#: order tracker's.
UNIQUE_ID_PREFIX = "log:"


def line_unique_id(line: bytes) -> str:
    """The identity of a log line: a hash of its bytes without the line ending.

    Content-derived, not position-derived, so the same line read from the live file, a
    rotated copy or a ``.gz`` archive gets the same id, and a replay adds nothing.
    Byte-identical lines are therefore one event; Klaviyo would merge them anyway (same
    metric, profile and second).
    """
    return UNIQUE_ID_PREFIX + hashlib.sha256(line.rstrip(b"\r\n")).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A log line of a synced event type, mapped to what Klaviyo should receive."""

    unique_id: str
    event_type: str
    metric: str
    occurred_at: datetime  # naive UTC
    customer_id: str | None
    email: str | None
    properties: dict[str, Any]
    profile: dict[str, Any]  # attributes the line carried: first_name, last_name, phone_number
    value: float | None
    value_currency: str | None

    def to_new_event(self, backfill: bool) -> NewEvent:
        """The queue record for this entry (``source="log"``)."""
        return NewEvent(
            unique_id=self.unique_id,
            metric=self.metric,
            source="log",
            occurred_at=self.occurred_at,
            properties=self.properties,
            customer_id=self.customer_id,
            email=self.email,
            profile=dict(self.profile) if self.profile else None,
            value=self.value,
            value_currency=self.value_currency,
            backfill=backfill,
        )
