"""What a sender is: the records it takes and returns, and the Sender protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from klaviyo_sync.exceptions import AuthError

if TYPE_CHECKING:
    from klaviyo_sync.senders.audit import AuditLog


@dataclass(frozen=True)
class OutgoingEvent:
    """One queued event, ready to go: its profile carries the customer's current data."""

    queue_id: int
    unique_id: str
    metric: str
    time: datetime  # naive UTC, the log entry's own time
    properties: dict[str, Any]
    profile: dict[str, Any]  # Klaviyo profile attributes: email, external_id, names, ...
    value: float | None = None
    value_currency: str | None = None
    backfill: bool = False
    #: Claimed before (a crash or a timeout may have delivered it already).
    resend: bool = False


@dataclass(frozen=True)
class AuthFailure:
    """Klaviyo refused our credentials: the HTTP status (None: no answer had one) and why."""

    status: int | None
    detail: str

    @classmethod
    def from_error(cls, exc: AuthError) -> AuthFailure:
        return cls(exc.status, str(exc))

    def to_error(self) -> AuthError:
        """The one exception every caller raises for this outcome (exit code 6)."""
        return AuthError(f"Klaviyo refused the credentials: {self.detail}", self.status)


@dataclass
class DeliveryReport:
    """What became of each event handed to :meth:`Sender.send_events`.

    Every event lands in exactly one bucket; the runner turns the buckets into queue
    operations (ack, fail, dead_letter, release).
    """

    sent: list[int] = field(default_factory=list)
    #: Klaviyo already had these (a resent bulk refused for a known unique_id): acked.
    already_recorded: list[int] = field(default_factory=list)
    dead: dict[int, str] = field(default_factory=dict)  # rejected: Klaviyo's error detail
    retry: dict[int, str] = field(default_factory=dict)  # 5xx, timeout: spend an attempt
    #: Not tried or refused with 429: back to the queue without spending an attempt.
    deferred: list[int] = field(default_factory=list)
    deferred_for_s: float = 0.0
    auth_failure: AuthFailure | None = None  # set when Klaviyo refused our credentials
    halted: bool = False  # auth refused or rate-limited: the rest was deferred
    requests: int = 0

    @property
    def auth_error(self) -> str | None:
        """The refusal's detail (None: the credentials were accepted or not tried)."""
        return self.auth_failure.detail if self.auth_failure else None

    def merge(self, other: DeliveryReport) -> None:
        self.sent += other.sent
        self.already_recorded += other.already_recorded
        self.dead.update(other.dead)
        self.retry.update(other.retry)
        self.deferred += other.deferred
        self.deferred_for_s = max(self.deferred_for_s, other.deferred_for_s)
        self.auth_failure = self.auth_failure or other.auth_failure
        self.halted = self.halted or other.halted
        self.requests += other.requests


class Sender(Protocol):
    """Delivers to Klaviyo (or somewhere that writes down what Klaviyo would get)."""

    @property
    def audit(self) -> AuditLog | None:
        """The request trail the runner flushes (None: this sender makes no requests)."""
        ...

    def send_events(self, events: Sequence[OutgoingEvent]) -> DeliveryReport:
        """Deliver events (bulk or single, as the sender sees fit); never raises SendError:
        each event's outcome is in the report."""
        ...

    def suppress_profiles(self, emails: Sequence[str]) -> None:
        """Put at most 100 emails on Klaviyo's suppression list; raises SendError types."""
        ...

    def unsuppress_profiles(self, emails: Sequence[str]) -> None:
        """Take at most 100 emails off Klaviyo's suppression list."""
        ...

    def import_profile(self, profile: dict[str, Any]) -> None:
        """Create or update one profile (POST /api/profile-import)."""
        ...

    def request_profile_deletion(self, email: str | None = None,
                                 profile_id: str | None = None) -> int:
        """Ask Klaviyo to delete the profiles of one identifier (data-privacy deletion job);
        returns the HTTP status; raises SendError types."""
        ...

    def find_profile_ids(self, external_id: str) -> list[str]:
        """Klaviyo's profile ids for an external id (empty when there is none)."""
        ...

    def close(self) -> None: ...
