"""What the SQLite and PostgreSQL drivers share: the queue's SQL, written once.

A leased row carries ``next_attempt_at = lease_until``, so a runner that died simply
lets its rows fall due again: the claim's one condition (``next_attempt_at <= now``)
covers both. The backends differ in how a claim locks (subclasses' :meth:`_due`), how a
claimed row is read back, how duplicates are skipped and how a transaction begins.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.queue.driver import BulkWriter, LogFields, SignupAttempts
from klaviyo_sync.queue.models import EventState, NewEvent, QueuedEvent
from klaviyo_sync.queue.retry import RetryPolicy
from klaviyo_sync.state.schema import events

DUE_STATES = (EventState.PENDING.value, EventState.LEASED.value)
_NEW_EVENT_FIELDS = tuple(f.name for f in fields(NewEvent))
#: What a claim reads back, in QueuedEvent's order (the leased columns it sets are known).
CLAIMED = ("id", "unique_id", "metric", "source", "occurred_at", "properties",
           "customer_id", "email", "profile", "value", "value_currency", "backfill",
           "attempts", "last_error", "created_at", "sent_at")


def _claim_order(event: QueuedEvent) -> tuple[datetime, int]:
    return (event.occurred_at, event.id)


def new_event_of(fields: LogFields, backfill: bool) -> NewEvent:
    """The queue record of a parsed log line (``source="log"``), as LogEntry makes it."""
    (unique_id, _, metric, occurred_at, customer_id, email, properties, profile, value,
     currency) = fields
    return NewEvent(unique_id, metric, "log", occurred_at, properties, customer_id, email,
                    dict(profile) if profile else None, value, currency, backfill)


class EventBulkWriter:
    """The bulk path of a driver without a faster one: one :class:`NewEvent` per row,
    inserted by the driver's ``enqueue`` as they come (nothing is held back)."""

    row_width = 1

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def fields_row(self, fields: LogFields, backfill: bool, now: datetime) -> NewEvent:
        return new_event_of(fields, backfill)

    def add(self, tx: Any, rows: Sequence[Any], now: datetime | None = None) -> int:
        if not rows:
            return 0
        from klaviyo_sync.clock import utcnow

        return int(self.driver.enqueue(tx, rows, now or utcnow()))

    def flush(self, tx: Any) -> int:
        return 0

    def discard(self) -> None:
        return None


class SqlDriver(abc.ABC):
    """The queue on a SQLAlchemy engine; see the subclasses for each backend."""

    name = "sql"
    errors: tuple[type[Exception], ...] = (sa.exc.DBAPIError,)
    #: Whether daemons on several hosts can share the database, holding role locks in
    #: it (PostgreSQL's advisory locks); without them one daemon runs every role.
    advisory_locks = False
    _claimed: tuple[Any, ...] = tuple(events.c[n] for n in CLAIMED)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- to be specialised ------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[Connection]:
        return self.engine.begin()

    @staticmethod
    @abc.abstractmethod
    def insert_ignoring_duplicates(conn: Connection, table: sa.Table,
                                   rows: Sequence[dict[str, Any]], key: str) -> int:
        """INSERT rows, skipping those whose ``key`` exists; returns rows inserted."""

    @staticmethod
    @abc.abstractmethod
    def upsert(conn: Connection, table: sa.Table, row: dict[str, Any], key: str) -> None:
        """Insert ``row``, or update every other column of the row with its ``key``."""

    def _due(self, now: datetime, limit: int) -> sa.Select[Any]:
        return (sa.select(events.c.id)
                .where(events.c.state.in_(DUE_STATES), events.c.next_attempt_at <= now)
                .order_by(events.c.next_attempt_at, events.c.id)
                .limit(limit))

    def _claimed_rows(self, rows: Sequence[Any]) -> Iterable[Sequence[Any]]:
        return rows

    def bulk_writer(self) -> BulkWriter:
        return EventBulkWriter(self)

    # --- producing --------------------------------------------------------------------

    def enqueue(self, tx: Connection, new_events: Iterable[NewEvent], now: datetime) -> int:
        rows = []
        seen: set[str] = set()
        for event in new_events:
            if event.unique_id in seen:
                continue
            seen.add(event.unique_id)
            # A shallow copy: asdict() deep-copies every properties dict, which was most
            # of the cost of a bulk enqueue (the rows are serialized right away anyway).
            row = {name: getattr(event, name) for name in _NEW_EVENT_FIELDS}
            row.update(state=EventState.PENDING.value, attempts=0, next_attempt_at=now,
                       created_at=now)
            rows.append(row)
        return self.insert_ignoring_duplicates(tx, events, rows, "unique_id")

    # --- consuming --------------------------------------------------------------------

    def claim(self, worker: str, limit: int, lease: timedelta, now: datetime
              ) -> list[QueuedEvent]:
        until = now + lease
        stmt = (
            events.update()
            .where(events.c.id.in_(self._due(now, limit).scalar_subquery()))
            .values(state=EventState.LEASED.value, attempts=events.c.attempts + 1,
                    lease_until=until, next_attempt_at=until, leased_by=worker)
            .returning(*self._claimed)
        )
        with self.transaction() as conn:
            rows = conn.execute(stmt).fetchall()
        # The columns the UPDATE just set are not read back: their values are known.
        leased = EventState.LEASED
        claimed = []
        for r in self._claimed_rows(rows):
            (row_id, unique_id, metric, source, occurred_at, properties, customer_id, email,
             profile, value, currency, backfill, attempts, last_error, created_at,
             sent_at) = r
            claimed.append(QueuedEvent(
                row_id, unique_id, metric, source, occurred_at, properties or {},
                customer_id, email, profile, value, currency, bool(backfill), leased,
                attempts, until, until, worker, last_error, created_at, sent_at))
        claimed.sort(key=_claim_order)
        return claimed

    def ack(self, ids: Sequence[int], worker: str, now: datetime) -> int:
        with self.transaction() as conn:
            return self._update_leased(conn, ids, worker, state=EventState.SENT.value,
                                       sent_at=now, lease_until=None, leased_by=None,
                                       last_error=None)

    def release(self, ids: Sequence[int], worker: str, next_attempt_at: datetime,
                reason: str | None) -> int:
        with self.transaction() as conn:
            return self._update_leased(
                conn, ids, worker, state=EventState.PENDING.value,
                attempts=sa.case((events.c.attempts > 0, events.c.attempts - 1), else_=0),
                next_attempt_at=next_attempt_at, lease_until=None, leased_by=None,
                **({"last_error": reason} if reason else {}),
            )

    def release_orphans(self, workers: Sequence[str], now: datetime) -> int:
        with self.transaction() as conn:
            return conn.execute(
                events.update()
                .where(events.c.leased_by.in_(list(workers)),
                       events.c.state == EventState.LEASED.value)
                .values(state=EventState.PENDING.value, next_attempt_at=now,
                        lease_until=None, leased_by=None)).rowcount

    def fail(self, failures: Mapping[int, str], worker: str, policy: RetryPolicy,
             now: datetime) -> tuple[int, int]:
        retried = dead = 0
        with self.transaction() as conn:
            rows = conn.execute(
                sa.select(events.c.id, events.c.attempts)
                .where(events.c.id.in_(list(failures)), events.c.leased_by == worker,
                       events.c.state == EventState.LEASED.value)
            ).fetchall()
            for row_id, attempts in rows:
                values = retry_values(policy, attempts, failures[row_id], now)
                if values["state"] == EventState.DEAD.value:
                    dead += 1
                else:
                    retried += 1
                conn.execute(events.update().where(events.c.id == row_id)
                             .values(lease_until=None, leased_by=None, **values))
        return (retried, dead)

    def dead_letter(self, failures: Mapping[int, str], worker: str) -> int:
        count = 0
        with self.transaction() as conn:
            for row_id, error in failures.items():
                count += self._update_leased(conn, [row_id], worker,
                                             state=EventState.DEAD.value, last_error=error,
                                             lease_until=None, leased_by=None)
        return count

    # --- operators --------------------------------------------------------------------

    def requeue(self, ids: Sequence[int] | None, metric: str | None, state: EventState,
                now: datetime) -> int:
        stmt = events.update().where(events.c.state == state.value)
        if ids is not None:
            stmt = stmt.where(events.c.id.in_(list(ids)))
        if metric is not None:
            stmt = stmt.where(events.c.metric == metric)
        stmt = stmt.values(state=EventState.PENDING.value, attempts=0, next_attempt_at=now,
                           lease_until=None, leased_by=None)
        with self.transaction() as conn:
            return int(conn.execute(stmt).rowcount)

    def purge(self, state: EventState, cutoff: datetime) -> int:
        stamp = events.c.sent_at if state is EventState.SENT else events.c.created_at
        with self.transaction() as conn:
            return int(conn.execute(
                events.delete().where(events.c.state == state.value, stamp < cutoff)
            ).rowcount)

    def get(self, event_id: int) -> QueuedEvent | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(events).where(events.c.id == event_id)).first()
        return QueuedEvent.from_row(row) if row is not None else None

    def list(self, state: EventState | None, metric: str | None, limit: int, offset: int
             ) -> builtins.list[QueuedEvent]:
        stmt = sa.select(events).order_by(events.c.id).limit(limit).offset(offset)
        if state is not None:
            stmt = stmt.where(events.c.state == state.value)
        if metric is not None:
            stmt = stmt.where(events.c.metric == metric)
        with self.engine.connect() as conn:
            return [QueuedEvent.from_row(r) for r in conn.execute(stmt)]

    # --- status and reports -----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events.c.state, sa.func.count()).group_by(events.c.state)
            ).fetchall()
        return {str(state): int(count) for state, count in rows}

    def oldest_due(self, now: datetime) -> datetime | None:
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(
                sa.select(sa.func.min(events.c.created_at))
                .where(events.c.state.in_(DUE_STATES), events.c.next_attempt_at <= now)
            ).scalar()
        return value

    def has_due_retries(self, now: datetime) -> bool:
        stmt = (sa.select(events.c.id)
                .where(events.c.state.in_(DUE_STATES), events.c.next_attempt_at <= now,
                       events.c.attempts > 0)
                .limit(1))
        with self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def metric_counts(self, source: str | None) -> dict[str, int]:
        stmt = sa.select(events.c.metric, sa.func.count()).group_by(events.c.metric)
        if source is not None:
            stmt = stmt.where(events.c.source == source)
        with self.engine.connect() as conn:
            return {str(metric): int(count) for metric, count in conn.execute(stmt)}

    def source_count(self, source: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events)
                                    .where(events.c.source == source)).scalar() or 0)

    def signup_attempts(self, metric: str, start: datetime | None, end: datetime | None
                        ) -> builtins.list[SignupAttempts]:
        stmt = (sa.select(events.c.customer_id, events.c.email,
                          sa.func.min(events.c.occurred_at), sa.func.max(events.c.occurred_at),
                          sa.func.count())
                .where(events.c.metric == metric)
                .group_by(events.c.customer_id, events.c.email))
        if start is not None:
            stmt = stmt.where(events.c.occurred_at >= start)
        if end is not None:
            stmt = stmt.where(events.c.occurred_at < end)
        with self.engine.connect() as conn:
            return [SignupAttempts(customer_id, email, first, last, int(count))
                    for customer_id, email, first, last, count in conn.execute(stmt)]

    def logged_profiles(self, metric: str, customer_ids: Sequence[str]
                        ) -> builtins.list[tuple[str, dict[str, Any] | None]]:
        found: builtins.list[tuple[str, dict[str, Any] | None]] = []
        with self.engine.connect() as conn:
            for start in range(0, len(customer_ids), 1000):
                rows = conn.execute(
                    sa.select(events.c.customer_id, events.c.profile)
                    .where(events.c.metric == metric,
                           events.c.customer_id.in_(customer_ids[start:start + 1000]))
                    .order_by(events.c.occurred_at))
                found.extend((customer_id, profile) for customer_id, profile in rows)
        return found

    # --- helpers ----------------------------------------------------------------------

    # --- erasure of one person ------------------------------------------------------------

    @staticmethod
    def _person(emails: Sequence[str], customer_ids: Sequence[str]) -> Any:
        clauses = []
        if emails:
            clauses.append(sa.func.lower(events.c.email).in_([e.lower() for e in emails]))
        if customer_ids:
            clauses.append(events.c.customer_id.in_(list(customer_ids)))
        return sa.or_(*clauses) if clauses else sa.false()

    def person_counts(self, tx: Connection, emails: Sequence[str],
                      customer_ids: Sequence[str]) -> dict[str, int]:
        rows = tx.execute(sa.select(events.c.state, sa.func.count())
                          .where(self._person(emails, customer_ids))
                          .group_by(events.c.state)).fetchall()
        return {state: int(n) for state, n in rows}

    def person_identities(self, tx: Connection, emails: Sequence[str],
                          customer_ids: Sequence[str]
                          ) -> builtins.list[tuple[str | None, str | None]]:
        return [(e, c) for e, c in tx.execute(
            sa.select(events.c.email, events.c.customer_id).distinct()
            .where(self._person(emails, customer_ids)))]

    def erase_person(self, tx: Connection, emails: Sequence[str],
                     customer_ids: Sequence[str]) -> int:
        return tx.execute(events.delete().where(self._person(emails, customer_ids))).rowcount

    def drop_claimed(self, ids: Sequence[int], worker: str) -> int:
        with self.transaction() as conn:
            return conn.execute(events.delete().where(
                events.c.id.in_(list(ids)), events.c.leased_by == worker)).rowcount

    @staticmethod
    def _update_leased(conn: Connection, ids: Sequence[int], worker: str, **values: Any) -> int:
        # Only rows this worker still holds: if its lease ran out and another runner took
        # them, that runner's outcome is the one that counts. `leased_by` is set exactly
        # while a row is leased (every way out of LEASED clears it), so it alone is the
        # fence; leaving `state` out of the predicate keeps PostgreSQL on the primary key
        # instead of the (state, next_attempt_at) index when statistics are stale.
        # The ids are one expanding parameter: in_(list) would coerce every id into a
        # bound parameter of its own when building the statement.
        stmt = (events.update()
                .where(events.c.id.in_(sa.bindparam("ids", expanding=True)),
                       events.c.leased_by == sa.bindparam("worker"))
                .values(**values))
        total = 0
        for start in range(0, len(ids), 1000):
            total += conn.execute(
                stmt, {"ids": list(ids[start:start + 1000]), "worker": worker}).rowcount
        return total


def retry_values(policy: RetryPolicy, attempts: int, error: str, now: datetime
                 ) -> dict[str, Any]:
    """A failed event's new state: pending with backoff, or dead when out of attempts."""
    if policy.exhausted(attempts):
        return dict(state=EventState.DEAD.value,
                    last_error=f"gave up after {attempts} attempts: {error}")
    return dict(state=EventState.PENDING.value, next_attempt_at=now + policy.delay(attempts),
                last_error=error)
