"""The queue's drivers, one per backend, and the factory choosing one for an engine.

Every SQLite-versus-PostgreSQL difference of the state database lives in a driver
(``sqlite.py``, ``postgresql.py``); ``memory.py`` is the in-memory one. The helpers
below give the other state tables' writers (rejects, order sync, suppressions,
checkpoints) the same dialect-specific statements and transaction idiom, so no module
outside ``queue/`` and ``state/`` branches on the backend.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.exceptions import QueueError
from klaviyo_sync.queue.drivers.base import SqlDriver
from klaviyo_sync.queue.drivers.memory import MemoryDriver
from klaviyo_sync.queue.drivers.postgresql import PostgresDriver
from klaviyo_sync.queue.drivers.sqlite import SqliteDriver

__all__ = ["MemoryDriver", "PostgresDriver", "SqlDriver", "SqliteDriver", "driver_for",
           "insert_ignoring_duplicates", "upsert", "write_transaction"]

_BY_DIALECT: dict[str, type[SqlDriver]] = {"sqlite": SqliteDriver,
                                           "postgresql": PostgresDriver}
# One driver per engine: drivers hold no state but their engine, so sharing is safe.
_drivers: weakref.WeakKeyDictionary[Engine, SqlDriver] = weakref.WeakKeyDictionary()


def driver_for(engine: Engine) -> SqlDriver:
    """The driver of ``engine``'s backend (SQLite or PostgreSQL)."""
    driver = _drivers.get(engine)
    if driver is None:
        driver = _drivers[engine] = _driver_class(engine.dialect.name)(engine)
    return driver


def _driver_class(dialect: str) -> type[SqlDriver]:
    try:
        return _BY_DIALECT[dialect]
    except KeyError:
        raise QueueError(f"unsupported state database dialect {dialect}: the state "
                         "database is SQLite or PostgreSQL") from None


def write_transaction(engine: Engine) -> AbstractContextManager[Connection]:
    """A write transaction on the state database, begun as its backend wants
    (SQLite: ``BEGIN IMMEDIATE``, so it never fails to upgrade a read lock)."""
    return driver_for(engine).transaction()


def insert_ignoring_duplicates(conn: Connection, table: sa.Table,
                               rows: Sequence[dict[str, Any]], key: str) -> int:
    """INSERT rows, skipping those whose ``key`` already exists. Returns rows inserted."""
    return _driver_class(conn.dialect.name).insert_ignoring_duplicates(conn, table, rows, key)


def upsert(conn: Connection, table: sa.Table, row: dict[str, Any], key: str) -> None:
    """Insert ``row``, or update every other column of the row with its ``key``."""
    _driver_class(conn.dialect.name).upsert(conn, table, row, key)
