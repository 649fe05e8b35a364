"""The SQLite driver's bulk path for the ingest: one batched insert per chunk of log.

Other drivers insert :class:`NewEvent` rows with their ``enqueue``. On SQLite the same
rows go straight to the sqlite3 driver with values pre-serialised exactly as
SQLAlchemy's types store them (JSON text, ``YYYY-MM-DD HH:MM:SS.ffffff`` times, 0/1
booleans): replaying a year of log is
dominated by this insert, and SQLAlchemy's per-row type processing would cost more than
the parsing. Rows written either way read back identically (a test compares them).

On SQLite the rows go in as INSERTs of many rows each (``VALUES (...), (...), ...``),
not one ``executemany``: the driver releases the GIL around every statement it steps,
so an ``executemany`` on the writer thread has to win the GIL back from the parsing
thread once per row, and waits a switch interval (5 ms) nearly every time. One
statement per thousands of rows waits once per thousands of rows, and the two threads
really overlap. Statements are of a few sizes only (a full one, halving sizes for what
is left when the transaction ends), so each is compiled once and stays in the driver's
cache: compiling costs about as much per row as inserting, and a compiled statement
holds ~1.5 KB per row, so a cache of odd sizes would cost tens of MB. Rows a chunk
leaves short of a full statement wait for the next chunk of the same transaction.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from sqlalchemy.engine import Connection

from klaviyo_sync.queue.driver import LogFields
from klaviyo_sync.queue.models import EventState

_COLUMNS = ("unique_id", "metric", "source", "customer_id", "email", "occurred_at",
            "properties", "profile", "value", "value_currency", "backfill", "state",
            "attempts", "next_attempt_at", "created_at")
_SQLITE_INSERT = (
    f"INSERT INTO events ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)}) ON CONFLICT (unique_id) DO NOTHING"
)
_WIDTH = len(_COLUMNS)
_SQLITE_ROW = f"({', '.join('?' for _ in _COLUMNS)})"
# Rows per multi-row INSERT: as many as fit SQLite's limit on bound variables (32766 since
# 3.32, 999 before), at most this many, so a statement stays a few hundred KB of SQL.
_SQLITE_MAX_ROWS = 4096
_PENDING = EventState.PENDING.value
# The page cache the bulk insert wants (KiB, as a negative cache_size): the unique index
# on random-looking ids touches pages all over; with SQLite's default 2 MB most inserts
# miss the cache, and a year's replay runs at half speed.
_SQLITE_CACHE_KIB = 16384
# What json.dumps() gives, except that NaN and Infinity (not JSON) are refused.
_dumps = json.JSONEncoder(separators=(", ", ": "), allow_nan=False).encode
_INF = float("inf")


def json_text(obj: dict[str, Any]) -> str:
    """``json.dumps(obj)``, twice as fast for the flat objects log lines make."""
    parts = []
    for key, value in obj.items():
        kind = type(value)
        if kind is str:
            text = _quote(value)
        elif kind is int or (kind is float and abs(value) < _INF):  # not NaN, not infinite
            text = repr(value)
        elif value is None:
            text = "null"
        elif kind is bool:
            text = "true" if value else "false"
        else:
            return _dumps(obj)  # nested values, NaN: the standard encoder decides
        if type(key) is not str:
            return _dumps(obj)
        parts.append(_quote(key) + ": " + text)
    return "{" + ", ".join(parts) + "}"


def sqlite_time(moment: datetime) -> str:
    """A naive UTC time as SQLAlchemy's SQLite DateTime stores it."""
    return moment.isoformat(sep=" ", timespec="microseconds")


class SqliteBulkWriter:
    """Turn parsed log lines into pre-serialised rows and insert them in the caller's
    transaction, many rows per statement."""

    #: List items per row in what :meth:`add` takes: a row's values go in one flat list,
    #: row after row: no tuple per row that outlives its line (the garbage collector
    #: walked them all) and nothing to flatten for the sqlite3 driver.
    row_width = _WIDTH

    def __init__(self) -> None:
        self._now: datetime | None = None
        self._now_text = ""
        self._occurred_at: datetime | None = None
        self._occurred_text = ""
        self._held: list[Any] = []  # rows waiting to fill a statement (see add)

    def fields_row(self, fields: LogFields, backfill: bool, now: datetime) -> Any:
        """The row of a parsed line's fields (:meth:`LineParser.entry_fields`)."""
        if now is not self._now:
            self._now, self._now_text = now, sqlite_time(now)
        (unique_id, _, metric, occurred_at, customer_id, email, properties, profile, value,
         currency) = fields
        if occurred_at is not self._occurred_at:  # lines of one second share the object
            self._occurred_at = occurred_at
            self._occurred_text = sqlite_time(occurred_at)
        return (
            unique_id, metric, "log", customer_id, email, self._occurred_text,
            json_text(properties), json_text(profile) if profile else "null", value,
            currency, 1 if backfill else 0, _PENDING, 0, self._now_text, self._now_text,
        )

    def add(self, conn: Connection, rows: Sequence[Any], now: datetime | None = None) -> int:
        """Insert rows collected flat (see :attr:`row_width`), skipping unique_ids
        already queued, except that the last rows (less than one statement's worth) may
        wait for the next call in the same transaction, or :meth:`flush`.

        Returns how many rows this call wrote that were new, whichever call they came
        from. The caller flushes before it commits, and discards after a rollback.
        """
        held = self._held
        held.extend(rows)
        cursor, most = self._cursor(conn)
        step = most * _WIDTH
        try:
            inserted = start = 0
            while len(held) - start >= step:
                inserted += _execute(cursor, most, held[start:start + step])
                start += step
        finally:
            cursor.close()
        del held[:start]
        return inserted

    def flush(self, conn: Connection) -> int:
        """Write the rows :meth:`add` held back; returns how many were new."""
        held = self._held
        if not held:
            return 0
        cursor, most = self._cursor(conn)
        try:
            inserted = start = 0
            size = most
            while start < len(held):
                # Halving sizes: a handful of statements, each compiled once and cached.
                while size * _WIDTH > len(held) - start:
                    size //= 2
                inserted += _execute(cursor, size, held[start:start + size * _WIDTH])
                start += size * _WIDTH
        finally:
            cursor.close()
        held.clear()
        return inserted

    def discard(self) -> None:
        """Forget rows held back (their transaction rolled back)."""
        self._held.clear()

    def _cursor(self, conn: Connection) -> tuple[Any, int]:
        driver = conn.connection.driver_connection
        cursor = driver.cursor()  # type: ignore[union-attr]
        cursor.execute(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
        most = _rows_per_insert(driver.getlimit(  # type: ignore[union-attr]
            sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
        return cursor, most


def _execute(cursor: Any, size: int, values: list[Any]) -> int:
    cursor.execute(_multi_insert(size), values)
    return max(cursor.rowcount, 0)


def _rows_per_insert(variable_limit: int) -> int:
    fits = max(variable_limit // len(_COLUMNS), 1)
    size = 1
    while size * 2 <= min(fits, _SQLITE_MAX_ROWS):
        size *= 2
    return size


@functools.lru_cache(maxsize=32)
def _multi_insert(rows: int) -> str:
    """The INSERT of ``rows`` rows at once (ids already queued are skipped)."""
    return _SQLITE_INSERT.replace(
        f"VALUES {_SQLITE_ROW}", "VALUES " + ", ".join([_SQLITE_ROW] * rows))
