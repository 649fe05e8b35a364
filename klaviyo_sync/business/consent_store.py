"""The consent pass's memory: ``consent_sync`` rows, read and written in one place."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.business.consent_rules import ConsentState
from klaviyo_sync.clock import iso_utc
from klaviyo_sync.state.schema import consent_sync

_IN_CHUNK = 500


@dataclass(frozen=True)
class ConsentRow:
    """A consent_sync row."""

    customer_id: str
    email: str | None
    phone: str | None
    state: ConsentState
    sms_state: ConsentState | None
    consented_at: datetime | None
    historical: bool
    reason: str | None

    @classmethod
    def from_row(cls, row: Any) -> ConsentRow:
        m = row._mapping
        return cls(m["customer_id"], m["email"], m["phone"], ConsentState(m["state"]),
                   ConsentState(m["sms_state"]) if m["sms_state"] else None,
                   m["consented_at"], bool(m["historical"]), m["reason"])

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "email": self.email, "phone": self.phone,
                "state": self.state.value,
                "sms_state": self.sms_state.value if self.sms_state else None,
                "consented_at": iso_utc(self.consented_at) if self.consented_at else None,
                "historical": self.historical, "reason": self.reason}


@dataclass
class ConsentReport:
    """What one pass (or reconciliation) did."""

    customers_read: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    error: str | None = None
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"customers_read": self.customers_read, "requests": self.requests,
                **dict(sorted(self.counts.items())), "error": self.error,
                "interrupted": self.interrupted}


def write(engine: Engine) -> Any:
    """A write transaction (BEGIN IMMEDIATE on SQLite: the lock before the reads)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE").begin()
    return engine.begin()


def known(engine: Engine, ids: Sequence[str]) -> dict[str, ConsentRow]:
    """The rows of these customers, by id."""
    found: dict[str, ConsentRow] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), _IN_CHUNK):
            for r in conn.execute(sa.select(consent_sync).where(
                    consent_sync.c.customer_id.in_(ids[start:start + _IN_CHUNK]))):
                row = ConsentRow.from_row(r)
                found[row.customer_id] = row
    return found


def in_state(engine: Engine, state: ConsentState, limit: int | None = None,
             historical: bool | None = None) -> list[ConsentRow]:
    """Rows in ``state`` by customer id (optionally only historical or only live)."""
    stmt = sa.select(consent_sync).where(consent_sync.c.state == state.value) \
        .order_by(consent_sync.c.customer_id)
    if historical is not None:
        stmt = stmt.where(consent_sync.c.historical == historical)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        return [ConsentRow.from_row(r) for r in conn.execute(stmt)]


def first_pending_kind(engine: Engine) -> bool | None:
    """Whether the next pending rows to send are historical (first) or live; None: none."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(consent_sync.c.historical)
            .where(consent_sync.c.state == ConsentState.PENDING.value)
            .order_by(consent_sync.c.historical.desc()).limit(1)).scalar()
    return None if found is None else bool(found)


def upsert(conn: sa.Connection, rows: list[dict[str, Any]],
           existing: dict[str, ConsentRow]) -> None:
    """Insert the rows of new customers, update the others (``existing``: their rows)."""
    inserts = [r for r in rows if r["customer_id"] not in existing]
    updates = [{**r, "b_id": r["customer_id"]} for r in rows if r["customer_id"] in existing]
    if inserts:
        conn.execute(consent_sync.insert(), inserts)
    if updates:
        for r in updates:
            r.pop("customer_id")
        # executemany: SET takes every column of the rows, WHERE the renamed key.
        conn.execute(consent_sync.update().where(
            consent_sync.c.customer_id == sa.bindparam("b_id")), updates)


def update(conn: sa.Connection, ids: Sequence[str], now: datetime, **values: Any) -> None:
    """Set ``values`` on these customers' rows, in the caller's transaction."""
    for start in range(0, len(ids), _IN_CHUNK):
        conn.execute(consent_sync.update()
                     .where(consent_sync.c.customer_id.in_(ids[start:start + _IN_CHUNK]))
                     .values(updated_at=now, **values))


def set_rows(engine: Engine, ids: Sequence[str], now: datetime, **values: Any) -> None:
    """:func:`update` in a transaction of its own (committed when it returns)."""
    if ids:
        with write(engine) as conn:
            update(conn, ids, now, **values)


def list_consent(state_engine: Engine, state: ConsentState | None = None
                 ) -> list[ConsentRow]:
    """consent_sync rows (``state`` matches the email or the SMS state), by customer id."""
    stmt = sa.select(consent_sync).order_by(consent_sync.c.customer_id)
    if state is not None:
        stmt = stmt.where(sa.or_(consent_sync.c.state == state.value,
                                 consent_sync.c.sms_state == state.value))
    with state_engine.connect() as conn:
        return [ConsentRow.from_row(r) for r in conn.execute(stmt)]
