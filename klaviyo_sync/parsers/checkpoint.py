"""The tail checkpoint: which file the tailer reads and how far it got.

It is written in the same transaction as the events read from the bytes before its
offset, which is the whole crash-safety argument: after a kill -9 either both the events
and the new offset are in the database, or neither is, and the bytes are read again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.parsers.tailer import FileIdentity
from klaviyo_sync.queue.drivers import upsert
from klaviyo_sync.state.schema import checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """Where reading the log named ``name`` (the configured path) stopped."""

    name: str
    path: str
    identity: FileIdentity
    offset: int
    file_size: int
    lines_read: int
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        m = row._mapping
        identity = FileIdentity(int(m["device"] or 0), int(m["inode"] or 0),
                                m["fingerprint"] or "", int(m["fingerprint_len"] or 0),
                                m["tail_fingerprint"] or "")
        return cls(name=m["name"], path=m["path"], identity=identity, offset=int(m["offset"]),
                   file_size=int(m["file_size"]), lines_read=int(m["lines_read"]),
                   updated_at=m["updated_at"])

    def to_row(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": self.path, "device": self.identity.device,
            "inode": self.identity.inode, "fingerprint": self.identity.fingerprint,
            "fingerprint_len": self.identity.fingerprint_len,
            "tail_fingerprint": self.identity.tail or None, "offset": self.offset,
            "file_size": self.file_size, "lines_read": self.lines_read,
            "updated_at": self.updated_at,
        }


def load(bind: Engine | Connection, name: str) -> Checkpoint | None:
    """The checkpoint of the log configured as ``name``, if the tailer ever ran."""
    stmt = sa.select(checkpoints).where(checkpoints.c.name == name)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            row = conn.execute(stmt).first()
    else:
        row = bind.execute(stmt).first()
    return Checkpoint.from_row(row) if row is not None else None


def save(conn: Connection, checkpoint: Checkpoint) -> None:
    """Insert or replace the checkpoint, in the caller's transaction."""
    upsert(conn, checkpoints, checkpoint.to_row(), "name")
