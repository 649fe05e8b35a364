"""The ingest's way into the queue: its store's bulk path, bound once.

The methods the ingest calls per row are the driver writer's own bound methods, so
the facade costs nothing per row (see queue/drivers/sqlite_bulk.py for the SQLite one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

from sqlalchemy.engine import Engine

from klaviyo_sync.queue.driver import LogFields, QueueDriver
from klaviyo_sync.queue.store import QueueStore


class BulkEnqueuer:
    """Turn parsed entries into rows and insert them in the caller's transaction."""

    def __init__(self, bind: Engine | QueueDriver | QueueStore) -> None:
        store = bind if isinstance(bind, QueueStore) else QueueStore(bind)
        writer = store.bulk_writer()
        #: List items per row in what :meth:`add` takes (see BulkWriter.row_width).
        self.row_width: int = writer.row_width
        #: The row of a parsed line's fields (:meth:`LineParser.entry_fields`).
        self.fields_row: Callable[[LogFields, bool, datetime], Any] = writer.fields_row
        #: Insert rows collected as :attr:`row_width` says; the last may wait for the
        #: next call in the same transaction or :attr:`flush`. Returns rows new.
        self.add: Callable[..., int] = writer.add
        #: Write the rows :attr:`add` held back (before the commit); returns rows new.
        self.flush: Callable[[Any], int] = writer.flush
        #: Forget the rows held back (their transaction rolled back).
        self.discard: Callable[[], None] = writer.discard

    def row(self, entry: Any, backfill: bool, now: datetime) -> Any:
        """What :meth:`insert` takes for one :class:`~klaviyo_sync.parsers.LogEntry`."""
        return self.fields_row(
            (entry.unique_id, entry.event_type, entry.metric, entry.occurred_at,
             entry.customer_id, entry.email, entry.properties, entry.profile, entry.value,
             entry.value_currency), backfill, now)

    def insert(self, tx: Any, rows: Sequence[Any], now: datetime | None = None) -> int:
        """Insert :meth:`row` results, skipping unique_ids already queued; returns how
        many rows were new."""
        collected = list(chain.from_iterable(rows)) if self.row_width > 1 else rows
        return self.add(tx, collected, now) + self.flush(tx)
