"""What the rest of klaviyo-sync needs of the state database's events table.

Every module outside ``queue/`` goes through a :class:`QueueDriver` (usually behind
:class:`~klaviyo_sync.queue.store.QueueStore`): one driver per backend holds that
backend's SQL, its dialect branches and its fast paths (``queue/drivers/``), and an
in-memory driver serves tests and the demo. The shared driver test suite
(tests/integration/test_queue_driver.py) runs the same tests against each of them.

A *transaction* is whatever :meth:`QueueDriver.transaction` yields: a SQLAlchemy
``Connection`` for the SQL drivers, so that the tailer's checkpoint and rejects commit
with the events in one transaction. Every method taking ``tx`` writes in it and commits
with it; every other method runs its own transaction.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from klaviyo_sync.queue.models import EventState, NewEvent, QueuedEvent
from klaviyo_sync.queue.retry import RetryPolicy

#: A parsed log line's fields, in LogEntry's order (parsers.mapping.EntryFields).
LogFields = tuple[Any, ...]


@dataclass(frozen=True)
class SignupAttempts:
    """Queued events of one metric for one (customer_id, email) pair, in a window."""

    customer_id: str | None
    email: str | None
    first_at: datetime
    last_at: datetime
    count: int


class BulkWriter(Protocol):
    """The ingest's bulk path into the queue, in the caller's transaction.

    Rows are made by :meth:`fields_row` and collected the way :attr:`row_width` says (one
    list item per row, or that many values per row, flat); :meth:`add` may hold the last
    rows back for the next call in the same transaction, so the caller calls
    :meth:`flush` before it commits and :meth:`discard` after a rollback.
    """

    #: List items per row in what :meth:`add` takes.
    row_width: int

    def fields_row(self, fields: LogFields, backfill: bool, now: datetime) -> Any: ...

    def add(self, tx: Any, rows: Sequence[Any], now: datetime | None = None) -> int: ...

    def flush(self, tx: Any) -> int: ...

    def discard(self) -> None: ...


class QueueDriver(Protocol):
    """One backend's implementation of the queue's operations."""

    #: "sqlite", "postgresql" or "memory".
    name: str
    #: What its writes may raise from the backend's own library (converted at the edge).
    errors: tuple[type[Exception], ...]

    # --- transactions and producing ---------------------------------------------------

    def transaction(self) -> AbstractContextManager[Any]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``, taking the write lock at
        BEGIN, so it never fails to upgrade a read lock halfway through)."""
        ...

    def enqueue(self, tx: Any, new_events: Iterable[NewEvent], now: datetime) -> int:
        """Insert events in ``tx``; a unique_id already queued (or repeated in the
        batch) is skipped. Returns how many rows were new."""
        ...

    def bulk_writer(self) -> BulkWriter:
        """A fresh :class:`BulkWriter` (it holds rows, so one per ingest)."""
        ...

    # --- consuming --------------------------------------------------------------------

    def claim(self, worker: str, limit: int, lease: timedelta, now: datetime
              ) -> list[QueuedEvent]:
        """Lease up to ``limit`` due events (pending or lease expired) to ``worker``,
        counting one attempt each; ordered by (occurred_at, id)."""
        ...

    def ack(self, ids: Sequence[int], worker: str, now: datetime) -> int: ...

    def release(self, ids: Sequence[int], worker: str, next_attempt_at: datetime,
                reason: str | None) -> int: ...

    def release_orphans(self, workers: Sequence[str], now: datetime) -> int:
        """Leased events of these (dead) workers, due at ``now``; attempts stay spent."""
        ...

    def fail(self, failures: Mapping[int, str], worker: str, policy: RetryPolicy,
             now: datetime) -> tuple[int, int]: ...

    def dead_letter(self, failures: Mapping[int, str], worker: str) -> int: ...

    # --- operators --------------------------------------------------------------------

    def requeue(self, ids: Sequence[int] | None, metric: str | None, state: EventState,
                now: datetime) -> int: ...

    def purge(self, state: EventState, cutoff: datetime) -> int:
        """Delete ``state`` events created (sent ones: sent) before ``cutoff``; never
        called for pending or leased ones."""
        ...

    def get(self, event_id: int) -> QueuedEvent | None: ...

    def list(self, state: EventState | None, metric: str | None, limit: int, offset: int
             ) -> builtins.list[QueuedEvent]: ...

    # --- status and reports -----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Events per state value (states without events may be missing)."""
        ...

    def oldest_due(self, now: datetime) -> datetime | None: ...

    def has_due_retries(self, now: datetime) -> bool:
        """Whether an event that failed once (or whose lease ran out) is due now."""
        ...

    def metric_counts(self, source: str | None) -> dict[str, int]:
        """Events per metric, of ``source`` only when given."""
        ...

    def source_count(self, source: str) -> int: ...

    def signup_attempts(self, metric: str, start: datetime | None, end: datetime | None
                        ) -> builtins.list[SignupAttempts]:
        """Events of ``metric`` with occurred_at in [start, end), per (customer, email)."""
        ...

    def logged_profiles(self, metric: str, customer_ids: Sequence[str]
                        ) -> Iterable[tuple[str, dict[str, Any] | None]]:
        """(customer_id, profile) of the events of ``metric`` of those customers,
        oldest occurred_at first."""
        ...

    # --- erasure of one person (klaviyo_sync/privacy) ---------------------------------

    def person_counts(self, tx: Any, emails: Sequence[str], customer_ids: Sequence[str]
                      ) -> dict[str, int]:
        """Events whose email (any case) or customer id is given, by state."""
        ...

    def person_identities(self, tx: Any, emails: Sequence[str], customer_ids: Sequence[str]
                          ) -> builtins.list[tuple[str | None, str | None]]:
        """Distinct (email, customer id) pairs of those events."""
        ...

    def erase_person(self, tx: Any, emails: Sequence[str], customer_ids: Sequence[str]
                     ) -> int:
        """Delete those events, whatever their state, in ``tx``."""
        ...

    def drop_claimed(self, ids: Sequence[int], worker: str) -> int:
        """Delete events ``worker`` holds leased."""
        ...
