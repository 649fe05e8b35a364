"""The queue's public face: enqueue, claim, acknowledge, retry, dead-letter and prune.

:class:`QueueStore` checks arguments, fills in the time and delegates to a driver (see
queue/driver.py): the driver of the engine's backend, or one given (the in-memory one in
tests and the demo). Claims take a lease in one statement, so a runner that died lets
its rows fall due again once the lease runs out.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from klaviyo_sync.clock import utcnow
from klaviyo_sync.exceptions import QueueError
from klaviyo_sync.queue.driver import BulkWriter, QueueDriver, SignupAttempts
from klaviyo_sync.queue.drivers import driver_for, insert_ignoring_duplicates
from klaviyo_sync.queue.models import EventState, NewEvent, QueuedEvent
from klaviyo_sync.queue.retry import RetryPolicy

__all__ = ["QueueStore", "insert_ignoring_duplicates"]


class QueueStore:
    """Enqueue, claim, acknowledge, retry, dead-letter and prune events."""

    def __init__(self, bind: Engine | QueueDriver) -> None:
        self.driver: QueueDriver = driver_for(bind) if isinstance(bind, Engine) else bind
        #: What a write may raise from the backend's own driver (to convert at the edge).
        self.errors: tuple[type[Exception], ...] = self.driver.errors

    # --- producing ------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[Any]:
        """A write transaction for :meth:`enqueue` and the writes that commit with it."""
        return self.driver.transaction()

    def enqueue(self, tx: Any, new_events: Iterable[NewEvent],
                now: datetime | None = None) -> int:
        """Insert events in the caller's transaction; an existing unique_id is skipped.

        Taking the caller's transaction is what lets the tailer commit its checkpoint and
        the events read before it in one transaction.
        """
        return self.driver.enqueue(tx, new_events, now or utcnow())

    def enqueue_many(self, new_events: Iterable[NewEvent], now: datetime | None = None) -> int:
        with self.driver.transaction() as tx:
            return self.enqueue(tx, new_events, now)

    def bulk_writer(self) -> BulkWriter:
        """The ingest's bulk path (see :class:`~klaviyo_sync.queue.bulk.BulkEnqueuer`)."""
        return self.driver.bulk_writer()

    # --- consuming ------------------------------------------------------------------

    def claim(self, worker: str, limit: int, lease: timedelta,
              now: datetime | None = None) -> list[QueuedEvent]:
        """Lease up to ``limit`` due events to ``worker``; counts one attempt each."""
        return self.driver.claim(worker, limit, lease, now or utcnow())

    def ack(self, ids: Sequence[int], worker: str, now: datetime | None = None) -> int:
        """Mark events sent. Only rows still leased by ``worker`` change."""
        if not ids:
            return 0
        return self.driver.ack(ids, worker, now or utcnow())

    def release(self, ids: Sequence[int], worker: str, delay: timedelta = timedelta(0),
                reason: str | None = None, now: datetime | None = None) -> int:
        """Give leased events back without spending an attempt (429, auth refused, shutdown)."""
        if not ids:
            return 0
        return self.driver.release(ids, worker, (now or utcnow()) + delay, reason)

    def release_orphans(self, workers: Sequence[str], now: datetime | None = None) -> int:
        """Leases of runners that died, due again at once (the attempt stays spent: a
        batch that keeps crashing its runner must still run out of attempts)."""
        if not workers:
            return 0
        return self.driver.release_orphans(workers, now or utcnow())

    # --- erasure (klaviyo_sync/privacy) -------------------------------------------------

    def person_counts(self, tx: Any, emails: Sequence[str], customer_ids: Sequence[str]
                      ) -> dict[str, int]:
        """Events of one person by state (what an erasure would remove)."""
        return self.driver.person_counts(tx, emails, customer_ids)

    def person_identities(self, tx: Any, emails: Sequence[str], customer_ids: Sequence[str]
                          ) -> builtins.list[tuple[str | None, str | None]]:
        """The (email, customer id) pairs the queue knows for a person."""
        return self.driver.person_identities(tx, emails, customer_ids)

    def erase_person(self, tx: Any, emails: Sequence[str], customer_ids: Sequence[str]) -> int:
        """Delete every event of one person, whatever its state, in the caller's
        transaction: pending ones are cancelled, sent ones hold personal data too."""
        return self.driver.erase_person(tx, emails, customer_ids)

    def drop_claimed(self, ids: Sequence[int], worker: str) -> int:
        """Delete leased events this worker holds (events of a forgotten person)."""
        return self.driver.drop_claimed(ids, worker) if ids else 0

    def fail(self, failures: Mapping[int, str], worker: str, policy: RetryPolicy,
             now: datetime | None = None) -> tuple[int, int]:
        """Record a temporary failure: retry later with backoff, or dead-letter if out of
        attempts. Returns (retried, dead)."""
        if not failures:
            return (0, 0)
        return self.driver.fail(failures, worker, policy, now or utcnow())

    def dead_letter(self, failures: Mapping[int, str], worker: str) -> int:
        """Permanently rejected events: keep them, with Klaviyo's error, for inspection."""
        if not failures:
            return 0
        return self.driver.dead_letter(failures, worker)

    # --- operators --------------------------------------------------------------------

    def requeue(self, ids: Sequence[int] | None = None, metric: str | None = None,
                state: EventState = EventState.DEAD, now: datetime | None = None) -> int:
        """`queue retry`: dead (or other) events back to pending with fresh attempts."""
        return self.driver.requeue(ids, metric, state, now or utcnow())

    def purge(self, state: EventState, older_than: timedelta, now: datetime | None = None
              ) -> int:
        """Delete events in ``state`` created (or, for sent ones, sent) before now - older_than."""
        if state in (EventState.PENDING, EventState.LEASED):
            raise QueueError("refusing to purge pending or leased events: they are undelivered")
        return self.driver.purge(state, (now or utcnow()) - older_than)

    def get(self, event_id: int) -> QueuedEvent:
        event = self.driver.get(event_id)
        if event is None:
            raise QueueError(f"no event with id {event_id}")
        return event

    def list(self, state: EventState | None = None, metric: str | None = None,
             limit: int = 100, offset: int = 0) -> builtins.list[QueuedEvent]:
        return self.driver.list(state, metric, limit, offset)

    # --- status and reports -----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Number of events in each state (every state present, zero if none)."""
        found = self.driver.counts()
        return {s.value: int(found.get(s.value, 0)) for s in EventState}

    def oldest_due(self, now: datetime | None = None) -> datetime | None:
        """Created time of the oldest undelivered event that is due now."""
        return self.driver.oldest_due(now or utcnow())

    def has_due_retries(self, now: datetime | None = None) -> bool:
        """Whether an event that already failed once (or whose lease ran out) is due now."""
        return self.driver.has_due_retries(now or utcnow())

    def metric_counts(self, source: str | None = None) -> dict[str, int]:
        """Events per metric (of one source when given)."""
        return self.driver.metric_counts(source)

    def source_count(self, source: str) -> int:
        """Events a source (``log``, ``order``) queued."""
        return self.driver.source_count(source)

    def signup_attempts(self, metric: str, start: datetime | None = None,
                        end: datetime | None = None) -> builtins.list[SignupAttempts]:
        """Events of ``metric`` in [start, end), counted per (customer_id, email)."""
        return self.driver.signup_attempts(metric, start, end)

    def logged_profiles(self, metric: str, customer_ids: Sequence[str]
                        ) -> Iterable[tuple[str, dict[str, Any] | None]]:
        """(customer_id, profile) of those customers' ``metric`` events, oldest first."""
        return self.driver.logged_profiles(metric, customer_ids)
