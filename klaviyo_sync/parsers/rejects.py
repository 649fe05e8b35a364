"""Rejected log lines: lines of a synced event type that could not become an event.

Kept with the file, offset, reason and (the head of) the raw bytes so an operator can see
what went wrong. A rejected line is identified by the hash of its content, like an event,
so replaying the log does not file the same bad line twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.clock import iso_utc
from klaviyo_sync.exceptions import QueueError
from klaviyo_sync.queue.drivers import insert_ignoring_duplicates
from klaviyo_sync.state.schema import REJECT_RAW_BYTES, rejects


@dataclass(frozen=True)
class Reject:
    """A row of the rejects table."""

    id: int
    file: str
    offset: int
    length: int
    raw: bytes
    truncated: bool
    event_type: str | None
    reason: str
    created_at: datetime
    line_hash: str

    @classmethod
    def from_row(cls, row: Any) -> Reject:
        m = row._mapping
        return cls(id=m["id"], file=m["file"], offset=int(m["offset"]), length=int(m["length"]),
                   raw=bytes(m["raw"]), truncated=bool(m["truncated"]),
                   event_type=m["event_type"], reason=m["reason"], created_at=m["created_at"],
                   line_hash=m["line_hash"])

    @property
    def text(self) -> str:
        """The stored bytes as text, invalid UTF-8 shown as escapes."""
        return self.raw.decode("utf-8", errors="backslashreplace")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "file": self.file, "offset": self.offset, "length": self.length,
            "event_type": self.event_type, "reason": self.reason, "truncated": self.truncated,
            "created_at": iso_utc(self.created_at), "raw": self.text,
        }


def reject_row(file: str, offset: int, line: bytes, reason: str, event_type: str | None,
               now: datetime, length: int | None = None, line_hash: str | None = None
               ) -> dict[str, Any]:
    """A row for :func:`RejectStore.add`; ``length``/``line_hash`` for a line seen in part."""
    size = len(line) if length is None else length
    return {
        "file": file, "offset": offset, "length": size, "raw": line[:REJECT_RAW_BYTES],
        "truncated": size > REJECT_RAW_BYTES, "event_type": event_type,
        "reason": reason[:2000], "created_at": now,
        "line_hash": line_hash or hashlib.sha256(line).hexdigest(),
    }


class RejectStore:
    """Add, list and show rejected lines."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def add(conn: Connection, rows: list[dict[str, Any]]) -> int:
        """Insert in the caller's transaction; a line already rejected is skipped."""
        return insert_ignoring_duplicates(conn, rejects, rows, "line_hash")

    def list(self, limit: int = 50, offset: int = 0) -> list[Reject]:
        """Newest first."""
        stmt = sa.select(rejects).order_by(rejects.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [Reject.from_row(r) for r in conn.execute(stmt)]

    def get(self, reject_id: int) -> Reject:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(rejects).where(rejects.c.id == reject_id)).first()
        if row is None:
            raise QueueError(f"no rejected line with id {reject_id}")
        return Reject.from_row(row)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(rejects)).scalar()
                       or 0)
