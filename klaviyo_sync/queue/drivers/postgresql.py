"""The queue on PostgreSQL: claims with ``FOR UPDATE SKIP LOCKED``.

Any number of runners on any number of hosts claim disjoint rows: each claim's
sub-select skips the rows another claim has locked instead of waiting for them.
Inserts count what they wrote with RETURNING (psycopg reports no rowcount for batched
inserts).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from klaviyo_sync.queue.drivers.base import SqlDriver

#: Rows per INSERT statement (psycopg batches the VALUES).
_INSERT_CHUNK = 5000


class PostgresDriver(SqlDriver):
    """The queue on a PostgreSQL state database (any number of hosts)."""

    name = "postgresql"
    errors: tuple[type[Exception], ...] = (sa.exc.DBAPIError,)
    advisory_locks = True

    def _due(self, now: datetime, limit: int) -> sa.Select[Any]:
        return super()._due(now, limit).with_for_update(skip_locked=True)

    @staticmethod
    def insert_ignoring_duplicates(conn: Connection, table: sa.Table,
                                   rows: Sequence[dict[str, Any]], key: str) -> int:
        if not rows:
            return 0
        stmt = (postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
                .returning(table.c[key]))
        inserted = 0
        for start in range(0, len(rows), _INSERT_CHUNK):
            inserted += len(conn.execute(stmt, list(rows[start:start + _INSERT_CHUNK]))
                            .fetchall())
        return inserted

    @staticmethod
    def upsert(conn: Connection, table: sa.Table, row: dict[str, Any], key: str) -> None:
        changed = {k: v for k, v in row.items() if k != key}
        conn.execute(postgresql.insert(table).values(**row).on_conflict_do_update(
            index_elements=[key], set_=changed))
