"""The queue on SQLite: write transactions that lock at BEGIN, claims read back as text,
and the ingest's multi-row bulk insert.

A write transaction is ``BEGIN IMMEDIATE`` (state/db.py issues the BEGIN): it takes the
database's write lock before reading, so a claim never fails to upgrade a read lock
halfway through, and one claim leases disjoint rows from any other.
"""

from __future__ import annotations

import json
import json.scanner
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection

from klaviyo_sync.queue.drivers.base import SqlDriver
from klaviyo_sync.queue.drivers.sqlite_bulk import SqliteBulkWriter

#: Rows per INSERT statement of insert_ignoring_duplicates.
_INSERT_CHUNK = 5000
_RAW_TYPES = (sa.DateTime, sa.JSON)


def _raw(column: Any) -> Any:
    # Datetime and JSON columns as the text SQLite stores, for _parse_raw.
    return sa.type_coerce(column, sa.Text()) if isinstance(column.type, _RAW_TYPES) \
        else column


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


def _parse_raw(row: Sequence[Any]) -> tuple[Any, ...]:
    (row_id, unique_id, metric, source, occurred_at, properties, customer_id, email,
     profile, value, currency, backfill, attempts, last_error, created_at, sent_at) = row
    return (row_id, unique_id, metric, source, _datetime(occurred_at), _json(properties),
            customer_id, email, _json(profile), value, currency, backfill, attempts,
            last_error, _datetime(created_at), _datetime(sent_at))


class SqliteDriver(SqlDriver):
    """The queue on a SQLite state database (one host, one writer at a time)."""

    name = "sqlite"
    #: Errors a write may raise: the bulk insert talks to the sqlite3 driver directly.
    errors: tuple[type[Exception], ...] = (sa.exc.DBAPIError, sqlite3.Error)
    # On SQLite the datetime and JSON columns come back as text and are parsed here with
    # the C parsers; SQLAlchemy's per-value processors (a regex per datetime) were a third
    # of the CPU a claim of 1,000 rows took.
    _claimed = tuple(_raw(column) for column in SqlDriver._claimed)

    def transaction(self) -> AbstractContextManager[Connection]:
        return self.engine.execution_options(sqlite_begin="IMMEDIATE").begin()

    def bulk_writer(self) -> SqliteBulkWriter:
        return SqliteBulkWriter()

    def _claimed_rows(self, rows: Sequence[Any]) -> Iterable[Sequence[Any]]:
        return map(_parse_raw, rows)

    @staticmethod
    def insert_ignoring_duplicates(conn: Connection, table: sa.Table,
                                   rows: Sequence[dict[str, Any]], key: str) -> int:
        if not rows:
            return 0
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
        inserted = 0
        for start in range(0, len(rows), _INSERT_CHUNK):
            result = conn.execute(stmt, list(rows[start:start + _INSERT_CHUNK]))
            inserted += max(result.rowcount, 0)
        return inserted

    @staticmethod
    def upsert(conn: Connection, table: sa.Table, row: dict[str, Any], key: str) -> None:
        changed = {k: v for k, v in row.items() if k != key}
        conn.execute(sqlite.insert(table).values(**row).on_conflict_do_update(
            index_elements=[key], set_=changed))
