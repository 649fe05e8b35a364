"""Small named values in the state database's ``meta`` table.

Well-known names are constants here so that writers (runner, order tracker) and readers
(status, health) agree on them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.clock import utcnow
from klaviyo_sync.state.schema import meta

LAST_SEND_OK_AT = "last_send_ok_at"  # ISO time of the last request Klaviyo accepted
AUTH_FAILURE = "auth_failure"  # JSON {"at", "status", "detail"} while Klaviyo refuses us
LAST_ORDERS_PASS_AT = "last_orders_pass_at"
ORDERS_WATERMARK = "orders_watermark"  # ISO updated_at up to which orders were read
LAST_TAIL_AT = "last_tail_at"
PROFILES_WATERMARK = "profiles_watermark"  # raw customers.updated_at read up to
LAST_PROFILES_PASS_AT = "last_profiles_pass_at"
OAUTH_REFRESH_TOKEN = "oauth_refresh_token"  # encrypted, see senders/auth.py


def get(bind: Engine | Connection, name: str) -> str | None:
    stmt = sa.select(meta.c.value).where(meta.c.name == name)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return conn.execute(stmt).scalar()
    return bind.execute(stmt).scalar()


def get_json(bind: Engine | Connection, name: str) -> Any:
    value = get(bind, name)
    return json.loads(value) if value is not None else None


def put(bind: Engine | Connection, name: str, value: str, now: datetime | None = None) -> None:
    """Insert or replace ``name`` (in the caller's transaction when given a connection)."""
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            put(conn, name, value, now)
        return
    now = now or utcnow()
    # One atomic upsert: two runners writing a name for the first time must not collide.
    insert: Any = (postgresql.insert(meta) if bind.dialect.name == "postgresql"
                   else sqlite.insert(meta))
    bind.execute(
        insert.values(name=name, value=value, updated_at=now).on_conflict_do_update(
            index_elements=[meta.c.name], set_={"value": value, "updated_at": now})
    )


def put_if_absent(bind: Engine | Connection, name: str, value: str) -> str:
    """Store ``value`` under ``name`` unless a value is there already; the stored one."""
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            return put_if_absent(conn, name, value)
    insert: Any = (postgresql.insert(meta) if bind.dialect.name == "postgresql"
                   else sqlite.insert(meta))
    bind.execute(insert.values(name=name, value=value, updated_at=utcnow())
                 .on_conflict_do_nothing(index_elements=[meta.c.name]))
    stored = get(bind, name)
    assert stored is not None  # just written, or there before
    return stored


def put_json(bind: Engine | Connection, name: str, value: Any) -> None:
    put(bind, name, json.dumps(value, default=str, allow_nan=False))


def delete(bind: Engine | Connection, name: str) -> None:
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            conn.execute(meta.delete().where(meta.c.name == name))
        return
    bind.execute(meta.delete().where(meta.c.name == name))
