"""Records of the queue: what producers enqueue and what the runner claims."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from klaviyo_sync.clock import iso_utc, iso_utc_or_none


class EventState(enum.StrEnum):
    PENDING = "pending"  # waiting for its next_attempt_at
    LEASED = "leased"  # claimed by a runner until lease_until
    SENT = "sent"  # Klaviyo accepted it (202)
    DEAD = "dead"  # rejected, or out of attempts: kept for inspection and `queue retry`


@dataclass(frozen=True)
class NewEvent:
    """An event a producer (log ingest, order tracker) wants delivered."""

    unique_id: str
    metric: str
    source: str  # "log" | "order"
    occurred_at: datetime  # naive UTC
    properties: dict[str, Any]
    customer_id: str | None = None
    email: str | None = None
    profile: dict[str, Any] | None = None  # attributes the source knew (first_name, ...)
    value: float | None = None
    value_currency: str | None = None
    backfill: bool = False


@dataclass(frozen=True)
class QueuedEvent:
    """A row of the queue."""

    id: int
    unique_id: str
    metric: str
    source: str
    occurred_at: datetime
    properties: dict[str, Any]
    customer_id: str | None
    email: str | None
    profile: dict[str, Any] | None
    value: float | None
    value_currency: str | None
    backfill: bool
    state: EventState
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    leased_by: str | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None = field(default=None)

    @classmethod
    def from_row(cls, row: Any) -> QueuedEvent:
        m = row._mapping
        return cls(
            id=m["id"], unique_id=m["unique_id"], metric=m["metric"], source=m["source"],
            occurred_at=m["occurred_at"], properties=m["properties"] or {},
            customer_id=m["customer_id"], email=m["email"], profile=m["profile"],
            value=m["value"], value_currency=m["value_currency"], backfill=bool(m["backfill"]),
            state=EventState(m["state"]), attempts=m["attempts"],
            next_attempt_at=m["next_attempt_at"], lease_until=m["lease_until"],
            leased_by=m["leased_by"], last_error=m["last_error"], created_at=m["created_at"],
            sent_at=m["sent_at"],
        )

    def to_json(self) -> dict[str, Any]:
        """The shape `queue list --json` prints (one object per line)."""
        return {
            "id": self.id, "unique_id": self.unique_id, "metric": self.metric,
            "source": self.source, "customer_id": self.customer_id, "email": self.email,
            "time": iso_utc(self.occurred_at), "state": self.state.value,
            "attempts": self.attempts, "backfill": self.backfill, "value": self.value,
            "value_currency": self.value_currency, "properties": self.properties,
            "profile": self.profile,
            "next_attempt_at": iso_utc(self.next_attempt_at),
            "last_error": self.last_error,
            "created_at": iso_utc(self.created_at),
            "sent_at": iso_utc_or_none(self.sent_at),
        }
