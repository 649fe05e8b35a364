"""The queue's operations on the state database.

Claims take a lease in one statement: on PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets any
number of runners on any number of hosts claim disjoint rows; on SQLite the claim runs in
an IMMEDIATE transaction, which takes the database's write lock before reading. A leased
row carries ``next_attempt_at = lease_until``, so a runner that died simply lets its rows
fall due again: the claim's one condition (``next_attempt_at <= now``) covers both.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.clock import utcnow
from klaviyo_sync.exceptions import QueueError
from klaviyo_sync.queue.models import EventState, NewEvent, QueuedEvent
from klaviyo_sync.queue.retry import RetryPolicy
from klaviyo_sync.state.schema import events

_DUE_STATES = (EventState.PENDING.value, EventState.LEASED.value)
#: Rows per INSERT statement on backends that batch VALUES (PostgreSQL).
_INSERT_CHUNK = 5000
_NEW_EVENT_FIELDS = tuple(f.name for f in fields(NewEvent))


def insert_ignoring_duplicates(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
                               key: str) -> int:
    """INSERT rows, skipping those whose ``key`` already exists. Returns rows inserted."""
    if not rows:
        return 0
    dialect = conn.dialect.name
    stmt: Any
    if dialect == "postgresql":
        # psycopg reports no rowcount for batched inserts; RETURNING counts them instead.
        stmt = (postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
                .returning(table.c[key]))
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
    else:  # pragma: no cover - the state database is SQLite or PostgreSQL
        raise QueueError(f"unsupported state database dialect {dialect}")
    inserted = 0
    for start in range(0, len(rows), _INSERT_CHUNK):
        result = conn.execute(stmt, list(rows[start:start + _INSERT_CHUNK]))
        inserted += len(result.fetchall()) if dialect == "postgresql" else max(result.rowcount, 0)
    return inserted


#: What a claim reads back, in QueuedEvent's order (the leased columns it sets are known).
_CLAIMED = ("id", "unique_id", "metric", "source", "occurred_at", "properties",
            "customer_id", "email", "profile", "value", "value_currency", "backfill",
            "attempts", "last_error", "created_at", "sent_at")
_RAW_TYPES = (sa.DateTime, sa.JSON)


def _raw(column: sa.Column[Any]) -> Any:
    # Datetime and JSON columns as the text SQLite stores, for _parse_raw.
    return sa.type_coerce(column, sa.Text()) if isinstance(column.type, _RAW_TYPES) \
        else column


def _parse_raw(row: Sequence[Any]) -> tuple[Any, ...]:
    (row_id, unique_id, metric, source, occurred_at, properties, customer_id, email,
     profile, value, currency, backfill, attempts, last_error, created_at, sent_at) = row
    return (row_id, unique_id, metric, source, _datetime(occurred_at), _json(properties),
            customer_id, email, _json(profile), value, currency, backfill, attempts,
            last_error, _datetime(created_at), _datetime(sent_at))


def _datetime(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


#: The C scanner under json.loads, without its two whitespace regexes: 4x faster on the
#: small documents a queue row holds. Text it does not take whole goes to json.loads.
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        value, end = _scan(text, 0)
    except StopIteration:  # leading whitespace, or not JSON: json.loads decides
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _identity(row: Sequence[Any]) -> Sequence[Any]:
    return row


def _claim_order(event: QueuedEvent) -> tuple[datetime, int]:
    return (event.occurred_at, event.id)


class QueueStore:
    """Enqueue, claim, acknowledge, retry, dead-letter and prune events."""

    _claimed = tuple(events.c[name] for name in _CLAIMED)
    _claimed_raw = tuple(_raw(column) for column in _claimed)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    # --- producing ------------------------------------------------------------------

    def enqueue(self, conn: Connection, new_events: Iterable[NewEvent],
                now: datetime | None = None) -> int:
        """Insert events in the caller's transaction; an existing unique_id is skipped.

        Taking the caller's connection is what lets the tailer commit its checkpoint and
        the events read before it in one transaction.
        """
        now = now or utcnow()
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
        return insert_ignoring_duplicates(conn, events, rows, "unique_id")

    def enqueue_many(self, new_events: Iterable[NewEvent], now: datetime | None = None) -> int:
        with self._write() as conn:
            return self.enqueue(conn, new_events, now)

    # --- consuming ------------------------------------------------------------------

    def claim(self, worker: str, limit: int, lease: timedelta,
              now: datetime | None = None) -> list[QueuedEvent]:
        """Lease up to ``limit`` due events to ``worker``; counts one attempt each."""
        now = now or utcnow()
        until = now + lease
        due = (
            sa.select(events.c.id)
            .where(events.c.state.in_(_DUE_STATES), events.c.next_attempt_at <= now)
            .order_by(events.c.next_attempt_at, events.c.id)
            .limit(limit)
        )
        if self.is_postgres:
            due = due.with_for_update(skip_locked=True)
        stmt = (
            events.update()
            .where(events.c.id.in_(due.scalar_subquery()))
            .values(state=EventState.LEASED.value, attempts=events.c.attempts + 1,
                    lease_until=until, next_attempt_at=until, leased_by=worker)
            .returning(*(self._claimed_raw if not self.is_postgres else self._claimed))
        )
        with self._write() as conn:
            rows = conn.execute(stmt).fetchall()
        # The columns the UPDATE just set are not read back: their values are known.
        # On SQLite the datetime and JSON columns come back as text and are parsed here
        # with the C parsers; SQLAlchemy's per-value processors (a regex per datetime)
        # were a third of the CPU a claim of 1,000 rows took.
        leased = EventState.LEASED
        parse = _parse_raw if not self.is_postgres else _identity
        claimed = []
        for r in rows:
            (row_id, unique_id, metric, source, occurred_at, properties, customer_id, email,
             profile, value, currency, backfill, attempts, last_error, created_at,
             sent_at) = parse(r)
            claimed.append(QueuedEvent(
                row_id, unique_id, metric, source, occurred_at, properties or {},
                customer_id, email, profile, value, currency, bool(backfill), leased,
                attempts, until, until, worker, last_error, created_at, sent_at))
        claimed.sort(key=_claim_order)
        return claimed

    def ack(self, ids: Sequence[int], worker: str, now: datetime | None = None) -> int:
        """Mark events sent. Only rows still leased by ``worker`` change."""
        if not ids:
            return 0
        now = now or utcnow()
        with self._write() as conn:
            return self._update_leased(conn, ids, worker, state=EventState.SENT.value,
                                       sent_at=now, lease_until=None, leased_by=None,
                                       last_error=None)

    def release(self, ids: Sequence[int], worker: str, delay: timedelta = timedelta(0),
                reason: str | None = None, now: datetime | None = None) -> int:
        """Give leased events back without spending an attempt (429, auth refused, shutdown)."""
        if not ids:
            return 0
        now = now or utcnow()
        with self._write() as conn:
            return self._update_leased(
                conn, ids, worker, state=EventState.PENDING.value,
                attempts=sa.case((events.c.attempts > 0, events.c.attempts - 1), else_=0),
                next_attempt_at=now + delay, lease_until=None, leased_by=None,
                **({"last_error": reason} if reason else {}),
            )

    def release_orphans(self, workers: Sequence[str], now: datetime | None = None) -> int:
        """Leases of runners that died, due again at once (the attempt stays spent: a
        batch that keeps crashing its runner must still run out of attempts)."""
        if not workers:
            return 0
        now = now or utcnow()
        with self._write() as conn:
            return conn.execute(
                events.update()
                .where(events.c.leased_by.in_(list(workers)),
                       events.c.state == EventState.LEASED.value)
                .values(state=EventState.PENDING.value, next_attempt_at=now,
                        lease_until=None, leased_by=None)).rowcount

    # --- erasure (klaviyo_sync/privacy) -------------------------------------------------

    @staticmethod
    def _person(emails: Sequence[str], customer_ids: Sequence[str]) -> Any:
        clauses = []
        if emails:
            clauses.append(sa.func.lower(events.c.email).in_([e.lower() for e in emails]))
        if customer_ids:
            clauses.append(events.c.customer_id.in_(list(customer_ids)))
        return sa.or_(*clauses) if clauses else sa.false()

    def person_counts(self, conn: Connection, emails: Sequence[str],
                      customer_ids: Sequence[str]) -> dict[str, int]:
        """Events of one person by state (what an erasure would remove)."""
        rows = conn.execute(sa.select(events.c.state, sa.func.count())
                            .where(self._person(emails, customer_ids))
                            .group_by(events.c.state)).fetchall()
        return {state: int(n) for state, n in rows}

    def person_identities(self, conn: Connection, emails: Sequence[str],
                          customer_ids: Sequence[str]) -> list[tuple[str | None, str | None]]:
        """The (email, customer id) pairs the queue knows for a person."""
        return [(e, c) for e, c in conn.execute(
            sa.select(events.c.email, events.c.customer_id).distinct()
            .where(self._person(emails, customer_ids)))]

    def erase_person(self, conn: Connection, emails: Sequence[str],
                     customer_ids: Sequence[str]) -> int:
        """Delete every event of one person, whatever its state (in the caller's
        transaction): pending ones are cancelled, sent ones hold personal data too."""
        return conn.execute(events.delete().where(self._person(emails, customer_ids))).rowcount

    def drop_claimed(self, ids: Sequence[int], worker: str) -> int:
        """Delete leased events this worker holds (events of a forgotten person)."""
        if not ids:
            return 0
        with self._write() as conn:
            return conn.execute(events.delete().where(
                events.c.id.in_(list(ids)), events.c.leased_by == worker)).rowcount

    def fail(self, failures: Mapping[int, str], worker: str, policy: RetryPolicy,
             now: datetime | None = None) -> tuple[int, int]:
        """Record a temporary failure: retry later with backoff, or dead-letter if out of
        attempts. Returns (retried, dead)."""
        if not failures:
            return (0, 0)
        now = now or utcnow()
        retried = dead = 0
        with self._write() as conn:
            rows = conn.execute(
                sa.select(events.c.id, events.c.attempts)
                .where(events.c.id.in_(list(failures)), events.c.leased_by == worker,
                       events.c.state == EventState.LEASED.value)
            ).fetchall()
            for row_id, attempts in rows:
                error = failures[row_id]
                if policy.exhausted(attempts):
                    values: dict[str, Any] = dict(state=EventState.DEAD.value,
                                                  last_error=f"gave up after {attempts} attempts: "
                                                             f"{error}")
                    dead += 1
                else:
                    values = dict(state=EventState.PENDING.value,
                                  next_attempt_at=now + policy.delay(attempts),
                                  last_error=error)
                    retried += 1
                conn.execute(events.update().where(events.c.id == row_id)
                             .values(lease_until=None, leased_by=None, **values))
        return (retried, dead)

    def dead_letter(self, failures: Mapping[int, str], worker: str) -> int:
        """Permanently rejected events: keep them, with Klaviyo's error, for inspection."""
        count = 0
        with self._write() as conn:
            for row_id, error in failures.items():
                count += self._update_leased(conn, [row_id], worker,
                                             state=EventState.DEAD.value, last_error=error,
                                             lease_until=None, leased_by=None)
        return count

    # --- operators --------------------------------------------------------------------

    def requeue(self, ids: Sequence[int] | None = None, metric: str | None = None,
                state: EventState = EventState.DEAD, now: datetime | None = None) -> int:
        """`queue retry`: dead (or other) events back to pending with fresh attempts."""
        now = now or utcnow()
        stmt = events.update().where(events.c.state == state.value)
        if ids is not None:
            stmt = stmt.where(events.c.id.in_(list(ids)))
        if metric is not None:
            stmt = stmt.where(events.c.metric == metric)
        stmt = stmt.values(state=EventState.PENDING.value, attempts=0, next_attempt_at=now,
                           lease_until=None, leased_by=None)
        with self._write() as conn:
            return conn.execute(stmt).rowcount

    def purge(self, state: EventState, older_than: timedelta, now: datetime | None = None
              ) -> int:
        """Delete events in ``state`` created (or, for sent ones, sent) before now - older_than."""
        if state in (EventState.PENDING, EventState.LEASED):
            raise QueueError("refusing to purge pending or leased events: they are undelivered")
        cutoff = (now or utcnow()) - older_than
        stamp = events.c.sent_at if state is EventState.SENT else events.c.created_at
        with self._write() as conn:
            return conn.execute(
                events.delete().where(events.c.state == state.value, stamp < cutoff)
            ).rowcount

    def get(self, event_id: int) -> QueuedEvent:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(events).where(events.c.id == event_id)).first()
        if row is None:
            raise QueueError(f"no event with id {event_id}")
        return QueuedEvent.from_row(row)

    def list(self, state: EventState | None = None, metric: str | None = None,
             limit: int = 100, offset: int = 0) -> list[QueuedEvent]:
        stmt = sa.select(events).order_by(events.c.id).limit(limit).offset(offset)
        if state is not None:
            stmt = stmt.where(events.c.state == state.value)
        if metric is not None:
            stmt = stmt.where(events.c.metric == metric)
        with self.engine.connect() as conn:
            return [QueuedEvent.from_row(r) for r in conn.execute(stmt)]

    def counts(self) -> dict[str, int]:
        """Number of events in each state (every state present, zero if none)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events.c.state, sa.func.count()).group_by(events.c.state)
            ).fetchall()
        found = {state: count for state, count in rows}
        return {s.value: int(found.get(s.value, 0)) for s in EventState}

    def oldest_due(self, now: datetime | None = None) -> datetime | None:
        """occurred/created time of the oldest undelivered event that is due now."""
        now = now or utcnow()
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.min(events.c.created_at))
                .where(events.c.state.in_(_DUE_STATES), events.c.next_attempt_at <= now)
            ).scalar()

    # --- helpers ----------------------------------------------------------------------

    def _write(self) -> Any:
        """A write transaction; on SQLite it takes the write lock at BEGIN."""
        if self.is_postgres:
            return self.engine.begin()
        return self.engine.execution_options(sqlite_begin="IMMEDIATE").begin()

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
