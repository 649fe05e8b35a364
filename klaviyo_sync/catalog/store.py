"""The catalog pass's memory: ``catalog_sync`` (per object) and ``catalog_jobs`` (per job).

A job is written down (status prepared, its objects pointing at it) BEFORE its POST and
marked posted with Klaviyo's job id right after; its outcome is written in one transaction
with the objects' new state when it is read back. So a kill at any moment leaves either
a prepared job (maybe posted: the pass asks Klaviyo which of its objects exist) or a
posted one (read back by the next pass), never a job nobody will look at.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.senders.catalog import CatalogAction, CatalogKind, JobStatus
from klaviyo_sync.state import meta
from klaviyo_sync.state.schema import catalog_jobs, catalog_sync

WATERMARK = "catalog_watermark"  # raw updated_at up to which products were read
LAST_PASS_AT = "last_catalog_pass_at"
_CHUNK = 500


class SyncState(enum.StrEnum):
    SYNCED = "synced"  # Klaviyo holds what the digest says (or, deleted, nothing)
    IN_FLIGHT = "in_flight"  # in a job not read back yet
    FAILED = "failed"  # Klaviyo refused it; last_error has its detail
    PENDING = "pending"  # its job was lost in a crash: the next plan sends it again
    DELETED = "deleted"


@dataclass(frozen=True)
class SyncRow:
    kind: CatalogKind
    external_id: str
    digest: str | None
    in_klaviyo: bool
    created_by_us: bool
    state: SyncState
    job_id: int | None
    last_error: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> SyncRow:
        m = row._mapping
        return cls(CatalogKind(m["kind"]), m["external_id"], m["digest"], bool(m["in_klaviyo"]),
                   bool(m["created_by_us"]), SyncState(m["state"]), m["job_id"],
                   m["last_error"], m["updated_at"])


@dataclass(frozen=True)
class JobRecord:
    id: int
    kind: CatalogKind
    action: CatalogAction
    status: JobStatus
    klaviyo_job_id: str | None
    items: tuple[tuple[str, str | None], ...]  # (external id, digest sent) in body order

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        m = row._mapping
        return cls(m["id"], CatalogKind(m["kind"]), CatalogAction(m["action"]),
                   JobStatus(m["status"]), m["klaviyo_job_id"],
                   tuple((str(e), d) for e, d in m["items"]))


@dataclass(frozen=True)
class Outcome:
    """What became of one object of a job."""

    external_id: str
    digest: str | None
    error: str | None = None


class CatalogStore:
    """Reads and writes the two catalog tables of the state database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def known(self, kind: CatalogKind) -> dict[str, SyncRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(catalog_sync).where(catalog_sync.c.kind == kind.value))
            return {r.external_id: r for r in map(SyncRow.from_row, rows)}

    def failed(self) -> list[SyncRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(catalog_sync)
                                .where(catalog_sync.c.state == SyncState.FAILED.value)
                                .order_by(catalog_sync.c.kind, catalog_sync.c.external_id))
            return [SyncRow.from_row(r) for r in rows]

    def open_jobs(self) -> list[JobRecord]:
        """Jobs recorded but not read back (prepared or posted), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(catalog_jobs).where(catalog_jobs.c.status.in_(
                (JobStatus.PREPARED.value, JobStatus.POSTED.value))).order_by(catalog_jobs.c.id))
            return [JobRecord.from_row(r) for r in rows]

    # --- a job's life ---------------------------------------------------------------------

    def prepare(self, kind: CatalogKind, action: CatalogAction,
                items: Sequence[tuple[str, str | None]], now: datetime) -> JobRecord:
        """Record a job before it is posted, and point its objects at it."""
        with self._write() as conn:
            job_id = conn.execute(catalog_jobs.insert().values(
                kind=kind.value, action=action.value, status=JobStatus.PREPARED.value,
                items=[list(i) for i in items], total=len(items), failed=0, created_at=now,
            )).inserted_primary_key[0]
            ids = [e for e, _ in items]
            present = self._present(conn, kind, ids)
            new = [{"kind": kind.value, "external_id": e, "digest": None, "in_klaviyo": False,
                    "created_by_us": False, "state": SyncState.IN_FLIGHT.value,
                    "job_id": job_id, "updated_at": now} for e in ids if e not in present]
            if new:
                conn.execute(catalog_sync.insert(), new)
            if present:
                self._update(conn, kind, sorted(present),
                             state=SyncState.IN_FLIGHT.value, job_id=job_id, updated_at=now)
        return JobRecord(int(job_id), kind, action, JobStatus.PREPARED, None, tuple(items))

    def posted(self, job: JobRecord, klaviyo_job_id: str, now: datetime) -> JobRecord:
        with self._write() as conn:
            conn.execute(catalog_jobs.update().where(catalog_jobs.c.id == job.id).values(
                status=JobStatus.POSTED.value, klaviyo_job_id=klaviyo_job_id, posted_at=now))
        return JobRecord(job.id, job.kind, job.action, JobStatus.POSTED, klaviyo_job_id,
                         job.items)

    def finish(self, job: JobRecord, outcomes: Iterable[Outcome], status: JobStatus,
               now: datetime, error: str | None = None) -> int:
        """Write each object's outcome and close the job, in one transaction; the number
        of objects Klaviyo refused."""
        done: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        for o in outcomes:
            if o.error is not None:
                refused.append({"b_id": o.external_id, "last_error": o.error[:4000]})
            else:
                done.append({"b_id": o.external_id, "digest": o.digest})
        with self._write() as conn:
            base = catalog_sync.update().where(
                catalog_sync.c.kind == job.kind.value,
                catalog_sync.c.external_id == sa.bindparam("b_id"))
            if done:
                if job.action is CatalogAction.DELETE:
                    values: dict[str, Any] = {"digest": None, "in_klaviyo": False,
                                              "state": SyncState.DELETED.value}
                    for row in done:
                        row.pop("digest")
                else:
                    values = {"digest": sa.bindparam("digest"), "in_klaviyo": True,
                              "state": SyncState.SYNCED.value}
                    if job.action is CatalogAction.CREATE:
                        values["created_by_us"] = True
                conn.execute(base.values(job_id=None, last_error=None, updated_at=now,
                                         **values), done)
            if refused:
                conn.execute(base.values(job_id=None, state=SyncState.FAILED.value,
                                         updated_at=now), refused)
            conn.execute(catalog_jobs.update().where(catalog_jobs.c.id == job.id).values(
                status=status.value, failed=len(refused), error=error, read_back_at=now))
        return len(refused)

    def release(self, job: JobRecord, ids: Sequence[str], now: datetime) -> None:
        """Objects of a job lost in a crash that did not land in Klaviyo (or whose update
        may not have): free them, so that the next plan sends them again."""
        with self._write() as conn:
            self._update(conn, job.kind, list(ids), job_id=None,
                         state=SyncState.PENDING.value, updated_at=now)

    # --- watermark --------------------------------------------------------------------------

    def watermark(self) -> str | None:
        return meta.get(self.engine, WATERMARK)

    def set_watermark(self, text: str | None, now: datetime) -> None:
        if text is not None:
            meta.put(self.engine, WATERMARK, text, now)
        meta.put(self.engine, LAST_PASS_AT, now.isoformat(), now)

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _present(conn: Connection, kind: CatalogKind, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            found.update(conn.execute(sa.select(catalog_sync.c.external_id).where(
                catalog_sync.c.kind == kind.value,
                catalog_sync.c.external_id.in_(chunk))).scalars())
        return found

    @staticmethod
    def _update(conn: Connection, kind: CatalogKind, ids: Sequence[str], **values: Any) -> None:
        for start in range(0, len(ids), _CHUNK):
            conn.execute(catalog_sync.update().where(
                catalog_sync.c.kind == kind.value,
                catalog_sync.c.external_id.in_(ids[start:start + _CHUNK])).values(**values))

    def _write(self) -> Any:
        if self.engine.dialect.name == "sqlite":
            return self.engine.execution_options(sqlite_begin="IMMEDIATE").begin()
        return self.engine.begin()
