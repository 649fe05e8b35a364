"""The profiles pass's memory: per customer what Klaviyo imported, per request its job.

A request's row is written BEFORE the POST (``posting``, with its customers and digests
in body order, in profile_job_customers until it is ``done`` or ``abandoned``) and gets
Klaviyo's job id in its own transaction right after the 202 (``sent``). A crash between
the two leaves a ``posting`` row: its customers are sent again (an import is an upsert,
so a second copy changes nothing). A ``sent`` row is read back by the next pass. A
customer counts as imported only when :meth:`finish_job` records a complete job without
an error for them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.state import meta
from klaviyo_sync.state.schema import profile_job_customers, profile_jobs, profile_sync

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
#: The failed rows, written out as the partial index ix_profile_sync_failed is: a bound
#: parameter in its place would keep SQLite from using that index.
_IS_FAILED = sa.text("profile_sync.status = 'failed'")
#: What an import changes in a customer's row.
_IMPORTED_UPDATES = ("digest", "status", "job_id", "failed_digest", "last_error",
                     "imported_at", "updated_at")
#: customer ids per IN query (under SQLite's bound-parameter limit).
_CHUNK = 5000


class ProfileStatus(enum.StrEnum):
    IMPORTED = "imported"
    FAILED = "failed"


class JobState(enum.StrEnum):
    POSTING = "posting"  # written before the POST: Klaviyo may or may not have it
    SENT = "sent"  # Klaviyo answered 202 with this job id: to be read back
    DONE = "done"  # read back, every customer's outcome recorded
    ABANDONED = "abandoned"  # a posting row whose customers went into another request


@dataclass(frozen=True)
class Known:
    """What the store knows of one customer's profile."""

    digest: str | None
    status: ProfileStatus
    failed_digest: str | None


@dataclass(frozen=True)
class ProfileRecord:
    """A profile_sync row, as `profiles failed` shows it."""

    customer_id: str
    status: ProfileStatus
    job_id: str | None
    last_error: str | None
    imported_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> ProfileRecord:
        m = row._mapping
        return cls(m["customer_id"], ProfileStatus(m["status"]), m["job_id"], m["last_error"],
                   m["imported_at"], m["updated_at"])

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "status": self.status.value,
                "job_id": self.job_id, "error": self.last_error,
                "imported_at": self.imported_at.isoformat() if self.imported_at else None,
                "updated_at": self.updated_at.isoformat()}


@dataclass(frozen=True)
class ProfileJob:
    """A profile_jobs row: one import request and the customers in it, in body order."""

    id: int
    job_id: str | None
    state: JobState
    customers: tuple[tuple[str, str], ...]  # (customer id, digest); () when not loaded
    total: int  # customers in the request

    @classmethod
    def from_row(cls, row: Any) -> ProfileJob:
        m = row._mapping
        customers = m["customers"] or {}  # none: the request has ended
        return cls(m["id"], m["job_id"], JobState(m["status"]),
                   tuple((str(c), str(d)) for c, d in customers.items()), int(m["total"]))


#: A request's row with its customers (None once it has ended).
_WITH_CUSTOMERS = sa.select(profile_jobs, profile_job_customers.c.customers).select_from(
    profile_jobs.outerjoin(profile_job_customers,
                           profile_job_customers.c.job_row_id == profile_jobs.c.id))


class ProfileStore:
    """Reads and writes profile_sync and profile_jobs (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def any_recorded(self) -> bool:
        """Whether any customer's profile was ever recorded (not: the initial sync)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(profile_sync.c.customer_id).limit(1)).first() \
                is not None

    def known(self, customer_ids: Sequence[str]) -> dict[str, Known]:
        found: dict[str, Known] = {}
        c = profile_sync.c
        # One expanding parameter: in_(list) would make and coerce a parameter per id.
        stmt = sa.select(c.customer_id, c.digest, c.status, c.failed_digest).where(
            c.customer_id.in_(sa.bindparam("ids", expanding=True)))
        with self.engine.connect() as conn:
            for start in range(0, len(customer_ids), _CHUNK):
                chunk = list(customer_ids[start:start + _CHUNK])
                for cid, digest, status, failed in conn.execute(stmt, {"ids": chunk}):
                    found[cid] = Known(digest, ProfileStatus(status), failed)
        return found

    def open_job(self, customers: Sequence[tuple[str, str]], now: datetime,
                 watermark: str | None = None) -> int:
        """Record a request about to be posted (and the watermark it lets move on).
        A customer appears once in a request: the row maps each to its digest."""
        by_id = dict(customers)
        if len(by_id) != len(customers):
            raise ValueError("a bulk import request names a customer twice")
        with self._write() as conn:
            row_id = conn.execute(profile_jobs.insert().values(
                status=JobState.POSTING.value, total=len(customers),
                created_at=now)).inserted_primary_key[0]
            conn.execute(profile_job_customers.insert().values(job_row_id=row_id,
                                                               customers=by_id))
            if watermark is not None:
                meta.put(conn, meta.PROFILES_WATERMARK, watermark, now)
        return int(row_id)

    def job_sent(self, row_id: int, job_id: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(profile_jobs.update().where(profile_jobs.c.id == row_id).values(
                job_id=job_id, status=JobState.SENT.value, sent_at=now))

    def refused(self, row_id: int, remaining: Sequence[tuple[str, str]],
                failures: Mapping[str, tuple[str, str]], now: datetime) -> None:
        """A 400 refused the request: ``failures`` (customer -> (digest, error)) fail
        alone, the request keeps the ``remaining`` customers to post again."""
        with self._write() as conn:
            self._record(conn, failures, "refused", now)
            conn.execute(profile_job_customers.update().where(
                profile_job_customers.c.job_row_id == row_id).values(
                customers=dict(remaining)))
            conn.execute(profile_jobs.update().where(profile_jobs.c.id == row_id).values(
                total=len(remaining)))

    def abandon(self, row_id: int) -> None:
        """A request whose customers went into others: it keeps none of them."""
        with self._write() as conn:
            self._drop_customers(conn, row_id)
            conn.execute(profile_jobs.update().where(profile_jobs.c.id == row_id)
                         .values(status=JobState.ABANDONED.value))

    def unfinished(self) -> list[ProfileJob]:
        """Requests not yet read back (``sent``) or perhaps never posted (``posting``)."""
        with self.engine.connect() as conn:
            rows = conn.execute(_WITH_CUSTOMERS.where(profile_jobs.c.status.in_(
                (JobState.POSTING.value, JobState.SENT.value))).order_by(profile_jobs.c.id))
            return [ProfileJob.from_row(r) for r in rows]

    def job(self, row_id: int) -> ProfileJob:
        """One request's row, its customers included."""
        with self.engine.connect() as conn:
            row = conn.execute(_WITH_CUSTOMERS.where(profile_jobs.c.id == row_id)).one()
        return ProfileJob.from_row(row)

    def finish_job(self, job: ProfileJob, errors: Mapping[str, str], now: datetime) -> None:
        """Job complete: customers with an error failed with it, the others imported.

        ``job.customers`` are needed only when there are errors (their digests): the
        imported ones are written from the job's customers inside the database, a statement
        for the 10,000 customers of a request rather than 10,000 rows through Python.
        The request then lets go of its customers (their outcomes are in profile_sync):
        its row keeps the counts, the state does not grow by every request's ids and
        digests, and an erased customer's id does not stay behind in old requests.
        """
        assert job.job_id is not None
        failures = {cid: (digest, errors[cid]) for cid, digest in job.customers
                    if cid in errors}
        with self._write() as conn:
            values: dict[str, Any] = {"row_id": job.id, "job_id": job.job_id, "now": now}
            if errors:
                values["failed"] = json.dumps(sorted(errors))
            conn.execute(self._import_statement(conn.dialect.name, bool(errors)), values)
            self._record(conn, failures, job.job_id, now)
            self._drop_customers(conn, job.id)
            conn.execute(profile_jobs.update().where(profile_jobs.c.id == job.id).values(
                status=JobState.DONE.value, failed=len(failures), read_at=now))

    @staticmethod
    def _import_statement(dialect: str, any_failed: bool) -> sa.TextClause:
        """Every customer of the request, but the failed ones (a JSON list), recorded
        as imported with the digest kept for them. Its profile_job_customers row is a JSON
        object, customer id -> digest: its members come out of ``json_each`` as (key,
        value) without a second parse of each pair."""
        if dialect == "sqlite":
            source = "profile_job_customers AS j, json_each(j.customers) AS e"
            failed = "SELECT value FROM json_each(:failed)"
        else:
            source = "profile_job_customers AS j, json_each_text(j.customers) AS e"
            failed = "SELECT json_array_elements_text(CAST(:failed AS json))"
        sets = ", ".join(f"{name} = excluded.{name}" for name in _IMPORTED_UPDATES)
        not_failed = f" AND e.key NOT IN ({failed})" if any_failed else ""
        return sa.text(
            "INSERT INTO profile_sync (customer_id, digest, status, job_id, failed_digest, "
            "last_error, imported_at, updated_at) "
            f"SELECT e.key, e.value, '{ProfileStatus.IMPORTED.value}', :job_id, NULL, "
            f"NULL, :now, :now FROM {source} "
            f"WHERE j.job_row_id = :row_id{not_failed} "
            f"ON CONFLICT (customer_id) DO UPDATE SET {sets}"
        ).bindparams(sa.bindparam("now", type_=sa.DateTime()))

    def imported_ids(self) -> list[str]:
        """Every customer id the profiles pass ever recorded."""
        with self.engine.connect() as conn:
            return [str(c) for c in conn.execute(sa.select(profile_sync.c.customer_id)
                                                 .order_by(profile_sync.c.customer_id))
                    .scalars()]

    def failed(self, limit: int | None = None) -> list[ProfileRecord]:
        stmt = (sa.select(profile_sync).where(_IS_FAILED)
                .order_by(profile_sync.c.updated_at.desc(), profile_sync.c.customer_id))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [ProfileRecord.from_row(r) for r in conn.execute(stmt)]

    def counts(self) -> dict[str, int]:
        """Customers per status, and requests still to read back (``unread_jobs``)."""
        with self.engine.connect() as conn:
            # count(*) and the failed rows' partial index, not a scan grouped by status.
            total = int(conn.execute(sa.select(sa.func.count()).select_from(profile_sync))
                        .scalar() or 0)
            failed = int(conn.execute(sa.select(sa.func.count()).select_from(profile_sync)
                                      .where(_IS_FAILED)).scalar() or 0)
            found = {status.value: n for status, n in (
                (ProfileStatus.IMPORTED, total - failed), (ProfileStatus.FAILED, failed)) if n}
            found["unread_jobs"] = int(conn.execute(
                sa.select(sa.func.count()).select_from(profile_jobs).where(
                    profile_jobs.c.status.in_((JobState.POSTING.value,
                                               JobState.SENT.value)))).scalar() or 0)
        return found

    # --- writing -------------------------------------------------------------------------

    @staticmethod
    def _drop_customers(conn: Connection, row_id: int) -> None:
        conn.execute(profile_job_customers.delete().where(
            profile_job_customers.c.job_row_id == row_id))

    def _record(self, conn: Connection, failures: Mapping[str, tuple[str, str]],
                job_id: str | None, now: datetime) -> None:
        # A failure keeps the digest of the last profile that WAS imported.
        rows = [{"customer_id": cid, "digest": None, "status": ProfileStatus.FAILED.value,
                 "job_id": job_id, "failed_digest": digest, "last_error": error[:4000],
                 "imported_at": None, "updated_at": now}
                for cid, (digest, error) in failures.items()]
        self._upsert(conn, rows, ("status", "job_id", "failed_digest", "last_error",
                                  "updated_at"))

    @staticmethod
    def _upsert(conn: Connection, rows: Iterable[dict[str, Any]],
                update: Sequence[str]) -> None:
        """INSERT ... ON CONFLICT DO UPDATE, through the driver's executemany (the failed
        customers of a request: SQLAlchemy's per-row parameter processing cost more than
        the database's work)."""
        rows = list(rows)
        if not rows:
            return
        columns = [c.name for c in profile_sync.columns]
        sqlite_style = conn.dialect.name == "sqlite"
        marks = ", ".join("?" if sqlite_style else f"%({name})s" for name in columns)
        sets = ", ".join(f"{name} = excluded.{name}" for name in update)
        sql = (f"INSERT INTO profile_sync ({', '.join(columns)}) VALUES ({marks}) "
               f"ON CONFLICT (customer_id) DO UPDATE SET {sets}")
        if sqlite_style:
            # SQLAlchemy's own text form of DateTime on SQLite, so reads parse it back; the
            # rows of one write share their times, so each is formatted once.
            texts: dict[datetime, str] = {}

            def cell(value: Any) -> Any:
                if value.__class__ is not datetime:
                    return value
                text = texts.get(value)
                if text is None:
                    text = texts[value] = value.strftime(_SQLITE_TIME)
                return text

            conn.exec_driver_sql(sql, [tuple([cell(r[name]) for name in columns])
                                       for r in rows])
        else:
            conn.exec_driver_sql(sql, rows)

    def _write(self) -> Any:
        # BEGIN IMMEDIATE on SQLite: take the write lock first, like the queue.
        if self.engine.dialect.name == "sqlite":
            return self.engine.execution_options(sqlite_begin="IMMEDIATE").begin()
        return self.engine.begin()
