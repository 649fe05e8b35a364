"""The queue in memory: the same contract as the SQL drivers, for tests and the demo.

One lock serialises transactions (as SQLite's write lock does): a transaction's inserts
are staged in it and become visible at commit, or are dropped with it. Nothing survives
the process.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from klaviyo_sync.queue.driver import SignupAttempts
from klaviyo_sync.queue.drivers.base import EventBulkWriter, retry_values
from klaviyo_sync.queue.models import EventState, NewEvent, QueuedEvent
from klaviyo_sync.queue.retry import RetryPolicy

_DUE = (EventState.PENDING, EventState.LEASED)
_NEW_EVENT_FIELDS = tuple(f.name for f in fields(NewEvent))


@dataclass
class MemoryTransaction:
    """What :meth:`MemoryDriver.transaction` yields: the rows it will add at commit."""

    staged: dict[str, dict[str, Any]] = field(default_factory=dict)


class MemoryDriver:
    """Events in a dict, ids from a counter."""

    name = "memory"
    errors: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self._rows: dict[int, dict[str, Any]] = {}
        self._ids: set[str] = set()
        self._next_id = 1
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        with self._lock:
            tx = MemoryTransaction()
            yield tx  # an exception here is a rollback: the staged rows are dropped
            for row in tx.staged.values():
                row["id"] = self._next_id
                self._rows[self._next_id] = row
                self._ids.add(row["unique_id"])
                self._next_id += 1

    def bulk_writer(self) -> EventBulkWriter:
        return EventBulkWriter(self)

    def enqueue(self, tx: MemoryTransaction, new_events: Iterable[NewEvent], now: datetime
                ) -> int:
        added = 0
        for event in new_events:
            if event.unique_id in self._ids or event.unique_id in tx.staged:
                continue
            row = {name: getattr(event, name) for name in _NEW_EVENT_FIELDS}
            row.update(state=EventState.PENDING, attempts=0, next_attempt_at=now,
                       lease_until=None, leased_by=None, last_error=None, created_at=now,
                       sent_at=None)
            tx.staged[event.unique_id] = row
            added += 1
        return added

    # --- consuming --------------------------------------------------------------------

    def claim(self, worker: str, limit: int, lease: timedelta, now: datetime
              ) -> list[QueuedEvent]:
        until = now + lease
        with self._lock:
            due = sorted((r for r in self._rows.values()
                          if r["state"] in _DUE and r["next_attempt_at"] <= now),
                         key=lambda r: (r["next_attempt_at"], r["id"]))[:limit]
            for row in due:
                row.update(state=EventState.LEASED, attempts=row["attempts"] + 1,
                           lease_until=until, next_attempt_at=until, leased_by=worker)
            claimed = [_event(r) for r in due]
        claimed.sort(key=lambda e: (e.occurred_at, e.id))
        return claimed

    def ack(self, ids: Sequence[int], worker: str, now: datetime) -> int:
        return self._update_leased(ids, worker, state=EventState.SENT, sent_at=now,
                                   last_error=None)

    def release(self, ids: Sequence[int], worker: str, next_attempt_at: datetime,
                reason: str | None) -> int:
        with self._lock:
            held = self._held(ids, worker)
            for row in held:
                row.update(state=EventState.PENDING, attempts=max(row["attempts"] - 1, 0),
                           next_attempt_at=next_attempt_at, lease_until=None,
                           leased_by=None, **({"last_error": reason} if reason else {}))
            return len(held)

    def release_orphans(self, workers: Sequence[str], now: datetime) -> int:
        dead = set(workers)
        with self._lock:
            rows = [r for r in self._rows.values()
                    if r["state"] is EventState.LEASED and r["leased_by"] in dead]
            for row in rows:
                row.update(state=EventState.PENDING, next_attempt_at=now, lease_until=None,
                           leased_by=None)
            return len(rows)

    def fail(self, failures: Mapping[int, str], worker: str, policy: RetryPolicy,
             now: datetime) -> tuple[int, int]:
        retried = dead = 0
        with self._lock:
            for row in self._held(list(failures), worker):
                values = retry_values(policy, row["attempts"], failures[row["id"]], now)
                values["state"] = EventState(values["state"])
                if values["state"] is EventState.DEAD:
                    dead += 1
                else:
                    retried += 1
                row.update(lease_until=None, leased_by=None, **values)
        return (retried, dead)

    def dead_letter(self, failures: Mapping[int, str], worker: str) -> int:
        with self._lock:
            return sum(self._update_leased([row_id], worker, state=EventState.DEAD,
                                           last_error=error)
                       for row_id, error in failures.items())

    # --- operators --------------------------------------------------------------------

    def requeue(self, ids: Sequence[int] | None, metric: str | None, state: EventState,
                now: datetime) -> int:
        wanted = set(ids) if ids is not None else None
        count = 0
        with self._lock:
            for row in self._rows.values():
                if row["state"] is not state or (wanted is not None and row["id"] not in wanted) \
                        or (metric is not None and row["metric"] != metric):
                    continue
                row.update(state=EventState.PENDING, attempts=0, next_attempt_at=now,
                           lease_until=None, leased_by=None)
                count += 1
        return count

    def purge(self, state: EventState, cutoff: datetime) -> int:
        stamp = "sent_at" if state is EventState.SENT else "created_at"
        with self._lock:
            gone = [row_id for row_id, r in self._rows.items()
                    if r["state"] is state and r[stamp] is not None and r[stamp] < cutoff]
            for row_id in gone:
                self._ids.discard(self._rows.pop(row_id)["unique_id"])
        return len(gone)

    def get(self, event_id: int) -> QueuedEvent | None:
        with self._lock:
            row = self._rows.get(event_id)
            return _event(row) if row is not None else None

    def list(self, state: EventState | None, metric: str | None, limit: int, offset: int
             ) -> builtins.list[QueuedEvent]:
        with self._lock:
            found = [_event(r) for _, r in sorted(self._rows.items())
                     if (state is None or r["state"] is state)
                     and (metric is None or r["metric"] == metric)]
        return found[offset:offset + limit]

    # --- status and reports -----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        with self._lock:
            for row in self._rows.values():
                found[row["state"].value] = found.get(row["state"].value, 0) + 1
        return found

    def oldest_due(self, now: datetime) -> datetime | None:
        with self._lock:
            return min((r["created_at"] for r in self._due(now)), default=None)

    def has_due_retries(self, now: datetime) -> bool:
        with self._lock:
            return any(r["attempts"] > 0 for r in self._due(now))

    def metric_counts(self, source: str | None) -> dict[str, int]:
        found: dict[str, int] = {}
        with self._lock:
            for row in self._rows.values():
                if source is None or row["source"] == source:
                    found[row["metric"]] = found.get(row["metric"], 0) + 1
        return found

    def source_count(self, source: str) -> int:
        with self._lock:
            return sum(1 for r in self._rows.values() if r["source"] == source)

    def signup_attempts(self, metric: str, start: datetime | None, end: datetime | None
                        ) -> builtins.list[SignupAttempts]:
        groups: dict[tuple[str | None, str | None], builtins.list[datetime]] = {}
        with self._lock:
            for row in self._rows.values():
                at = row["occurred_at"]
                if row["metric"] != metric or (start is not None and at < start) \
                        or (end is not None and at >= end):
                    continue
                groups.setdefault((row["customer_id"], row["email"]), []).append(at)
        return [SignupAttempts(customer_id, email, min(times), max(times), len(times))
                for (customer_id, email), times in groups.items()]

    def logged_profiles(self, metric: str, customer_ids: Sequence[str]
                        ) -> builtins.list[tuple[str, dict[str, Any] | None]]:
        wanted = set(customer_ids)
        with self._lock:
            rows = sorted((r for r in self._rows.values()
                           if r["metric"] == metric and r["customer_id"] in wanted),
                          key=lambda r: (r["occurred_at"], r["id"]))
            return [(r["customer_id"], r["profile"]) for r in rows]

    # --- helpers ----------------------------------------------------------------------

    # --- erasure of one person ------------------------------------------------------------

    def _of_person(self, emails: Sequence[str], customer_ids: Sequence[str]
                   ) -> builtins.list[dict[str, Any]]:
        lowered = {e.lower() for e in emails}
        ids = set(customer_ids)
        return [r for r in self._rows.values()
                if (r["email"] is not None and r["email"].lower() in lowered)
                or (r["customer_id"] is not None and r["customer_id"] in ids)]

    def person_counts(self, tx: Any, emails: Sequence[str], customer_ids: Sequence[str]
                      ) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for row in self._of_person(emails, customer_ids):
                state = str(EventState(row["state"]).value)
                counts[state] = counts.get(state, 0) + 1
        return counts

    def person_identities(self, tx: Any, emails: Sequence[str], customer_ids: Sequence[str]
                          ) -> builtins.list[tuple[str | None, str | None]]:
        with self._lock:
            return sorted({(r["email"], r["customer_id"])
                           for r in self._of_person(emails, customer_ids)},
                          key=lambda pair: (str(pair[0]), str(pair[1])))

    def erase_person(self, tx: Any, emails: Sequence[str], customer_ids: Sequence[str]
                     ) -> int:
        with self._lock:
            rows = self._of_person(emails, customer_ids)
            for row in rows:
                del self._rows[row["id"]]
                self._ids.discard(row["unique_id"])
            return len(rows)

    def drop_claimed(self, ids: Sequence[int], worker: str) -> int:
        with self._lock:
            held = self._held(ids, worker)
            for row in held:
                del self._rows[row["id"]]
                self._ids.discard(row["unique_id"])
            return len(held)

    def _due(self, now: datetime) -> Iterator[dict[str, Any]]:
        return (r for r in self._rows.values()
                if r["state"] in _DUE and r["next_attempt_at"] <= now)

    def _held(self, ids: Iterable[int], worker: str) -> builtins.list[dict[str, Any]]:
        # As on SQL: leased_by alone is the fence (it is set exactly while leased).
        rows = (self._rows.get(row_id) for row_id in ids)
        return [r for r in rows if r is not None and r["leased_by"] == worker]

    def _update_leased(self, ids: Sequence[int], worker: str, **values: Any) -> int:
        with self._lock:
            held = self._held(ids, worker)
            for row in held:
                row.update(lease_until=None, leased_by=None, **values)
            return len(held)


def _event(row: dict[str, Any]) -> QueuedEvent:
    values = dict(row)
    values["properties"] = dict(values["properties"] or {})
    return QueuedEvent(**values)
