"""The audit trail: one row per request made to Klaviyo; listing and pruning it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.clock import iso_utc, utcnow
from klaviyo_sync.state.schema import audit


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    method: str
    endpoint: str
    items: int
    status_code: int | None  # None: no answer (timeout, dropped connection)
    duration_ms: float
    error_codes: str | None = None
    worker: str | None = None
    id: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> AuditRecord:
        m = row._mapping
        return cls(id=m["id"], at=m["at"], method=m["method"], endpoint=m["endpoint"],
                   items=m["items"], status_code=m["status_code"],
                   duration_ms=m["duration_ms"], error_codes=m["error_codes"],
                   worker=m["worker"])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": iso_utc(self.at), "method": self.method,
                "endpoint": self.endpoint, "items": self.items,
                "status_code": self.status_code, "duration_ms": round(self.duration_ms, 1),
                "error_codes": self.error_codes, "worker": self.worker}


class AuditLog:
    """Collects audit rows and writes them in one transaction per flush.

    Rows are buffered because a row per request in its own transaction would cost a
    commit per request; the runner flushes after every batch, so a crash loses at most
    the rows of the batch in flight, whose events are resent anyway.
    """

    def __init__(self, engine: Engine | None, worker: str | None = None,
                 flush_every: int = 100) -> None:
        self.engine = engine
        self.worker = worker
        self.flush_every = flush_every
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, method: str, endpoint: str, items: int, status_code: int | None,
               duration_ms: float, error_codes: list[str] | None = None) -> None:
        row = {"at": utcnow(), "method": method, "endpoint": endpoint[:256], "items": items,
               "status_code": status_code, "duration_ms": duration_ms,
               "error_codes": ",".join(error_codes)[:2000] if error_codes else None,
               "worker": self.worker}
        with self._lock:
            self._rows.append(row)
            full = len(self._rows) >= self.flush_every
        if full:
            self.flush()

    def flush(self) -> int:
        with self._lock:
            rows, self._rows = self._rows, []
        if rows and self.engine is not None:
            with self.engine.begin() as conn:
                conn.execute(audit.insert(), rows)
        return len(rows)


def list_audit(engine: Engine, since: datetime | None = None, limit: int = 100
               ) -> list[AuditRecord]:
    """The newest audit rows first, optionally only those at or after ``since``."""
    stmt = sa.select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
    if since is not None:
        stmt = stmt.where(audit.c.at >= since)
    with engine.connect() as conn:
        return [AuditRecord.from_row(r) for r in conn.execute(stmt)]


def prune_audit(engine: Engine, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete audit rows older than ``older_than``; returns how many."""
    cutoff = (now or utcnow()) - older_than
    with engine.begin() as conn:
        return conn.execute(audit.delete().where(audit.c.at < cutoff)).rowcount
