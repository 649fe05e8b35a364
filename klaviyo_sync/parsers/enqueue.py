"""The ingest's bulk path into the queue: one batched insert per chunk of log.

On PostgreSQL this is :meth:`QueueStore.enqueue`. On SQLite the same rows go straight to
the driver's ``executemany`` with values pre-serialised exactly as SQLAlchemy's types
store them (JSON text, ``YYYY-MM-DD HH:MM:SS.ffffff`` times, 0/1 booleans): replaying a
year of log is dominated by this insert, and SQLAlchemy's per-row type processing would
cost more than the parsing. Rows written either way read back identically (a test
compares them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.parsers.entry import LogEntry
from klaviyo_sync.queue.models import EventState
from klaviyo_sync.queue.store import QueueStore

_COLUMNS = ("unique_id", "metric", "source", "customer_id", "email", "occurred_at",
            "properties", "profile", "value", "value_currency", "backfill", "state",
            "attempts", "next_attempt_at", "created_at")
_SQLITE_INSERT = (
    f"INSERT INTO events ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)}) ON CONFLICT (unique_id) DO NOTHING"
)
_PENDING = EventState.PENDING.value
_dumps = json.JSONEncoder(separators=(", ", ": ")).encode  # what json.dumps() gives


def sqlite_time(moment: datetime) -> str:
    """A naive UTC time as SQLAlchemy's SQLite DateTime stores it."""
    return moment.isoformat(sep=" ", timespec="microseconds")


class BulkEnqueuer:
    """Turn parsed entries into rows and insert them in the caller's transaction."""

    def __init__(self, engine: Engine) -> None:
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.store = QueueStore(engine)
        self._now: datetime | None = None
        self._now_text = ""

    def row(self, entry: LogEntry, backfill: bool, now: datetime) -> Any:
        """What :meth:`insert` takes for one entry."""
        if not self.is_sqlite:
            return entry.to_new_event(backfill)
        if now is not self._now:
            self._now, self._now_text = now, sqlite_time(now)
        profile = entry.profile
        return (
            entry.unique_id, entry.metric, "log", entry.customer_id, entry.email,
            entry.occurred_at.isoformat(sep=" ", timespec="microseconds"),
            _dumps(entry.properties), _dumps(profile) if profile else "null", entry.value,
            entry.value_currency, 1 if backfill else 0, _PENDING, 0, self._now_text,
            self._now_text,
        )

    def insert(self, conn: Connection, rows: Sequence[Any], now: datetime | None = None
               ) -> int:
        """Insert, skipping unique_ids already queued; returns how many rows were new."""
        if not rows:
            return 0
        if not self.is_sqlite:
            return self.store.enqueue(conn, rows, now)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(_SQLITE_INSERT, rows)
            return max(cursor.rowcount, 0)
        finally:
            cursor.close()
