"""Opt-outs made in Klaviyo, read back for the business: the optouts pass and its list.

The pass reads profiles whose email suppression changed since a cursor (filter and sort on
Klaviyo's suppression timestamp, 100 a page) and records one row per email, reason and
time. A page's rows and the cursor (the newest time on the page) are committed in ONE
transaction: a crash re-reads at most the page in flight, and the unique key on
(email, at, reason) keeps a re-read from recording anything twice. The next pass asks for
times at or after the cursor, so an opt-out sharing the cursor's moment is never skipped.

Our own suppressions are recorded as ``ours`` and never listed or written back. With
``[consent] writeback_url`` set, each new opt-out runs the configured statement once
(then ``written``); a crash between the business commit and ours runs it again, so the
statement must be idempotent (``SET email_opt_in = 0`` is).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from klaviyo_sync.business.consent_records import ConsentApi, KlaviyoConsent
from klaviyo_sync.business.consent_rules import is_ours
from klaviyo_sync.clock import iso_utc, iso_utc_or_none, utcnow
from klaviyo_sync.config import ConsentSettings
from klaviyo_sync.exceptions import BusinessDataError
from klaviyo_sync.state import meta
from klaviyo_sync.state.schema import consent_sync, optouts, suppressions

log = structlog.get_logger(__name__)

OPTOUTS_CURSOR = "optouts_cursor"  # ISO suppression time of the last committed page
_IN_CHUNK = 500


class OptoutState(enum.StrEnum):
    NEW = "new"  # for the business to apply
    SUPERSEDED = "superseded"  # the business opt-in is newer: the customer came back
    WRITTEN = "written"  # applied by the write-back statement
    OURS = "ours"  # our own suppression: never reported


@dataclass(frozen=True)
class Optout:
    """A row of the optouts table."""

    email: str
    customer_id: str | None
    reason: str
    at: datetime
    source: str
    method: str | None
    state: OptoutState
    written_back_at: datetime | None
    last_error: str | None
    recorded_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Optout:
        m = row._mapping
        return cls(m["email"], m["customer_id"], m["reason"], m["at"], m["source"],
                   m["method"], OptoutState(m["state"]), m["written_back_at"],
                   m["last_error"], m["recorded_at"])

    def to_json(self) -> dict[str, Any]:
        return {"email": self.email, "customer_id": self.customer_id, "reason": self.reason,
                "at": iso_utc(self.at), "state": self.state.value, "method": self.method,
                "written_back_at": iso_utc_or_none(self.written_back_at),
                "last_error": self.last_error, "recorded_at": iso_utc(self.recorded_at)}


@dataclass(frozen=True)
class OptoutsReport:
    pages: int = 0
    profiles: int = 0
    recorded: int = 0
    ours: int = 0
    written_back: int = 0
    cursor: str | None = None
    interrupted: bool = False


def our_suppressed(conn: sa.Connection, emails: Iterable[str]) -> set[str]:
    """Those of ``emails`` our suppression rule put (or is putting) on Klaviyo's list."""
    wanted = sorted({e for e in emails if e})
    found: set[str] = set()
    for start in range(0, len(wanted), _IN_CHUNK):
        found.update(conn.execute(
            sa.select(suppressions.c.email).where(
                suppressions.c.email.in_(wanted[start:start + _IN_CHUNK]),
                suppressions.c.state.in_(("pending", "sent")))).scalars())
    return found


#: email -> (customer id, opt-in time or None when not opted in now), from the business.
BusinessLookup = Callable[[Iterable[str]], dict[str, tuple[str, datetime | None]]]


class OptoutRecorder:
    """Writes opt-outs seen on Klaviyo profiles into the optouts table (idempotently)."""

    def __init__(self, custom_source: str, business: BusinessLookup | None = None) -> None:
        self.custom_source = custom_source
        self.business = business

    def record(self, conn: sa.Connection, profiles: Sequence[KlaviyoConsent], now: datetime
               ) -> tuple[int, int]:
        """Record every suppression of these profiles; returns (theirs new, ours new).

        An opt-out older than the customer's current business opt-in is *superseded*
        (they opted in again since): listed, never written back.
        """
        with_email = [p for p in profiles if p.email and p.suppressions]
        if not with_email:
            return 0, 0
        emails = [p.email or "" for p in with_email]
        ours = our_suppressed(conn, emails)
        who = self._customers(conn, with_email)
        rows: list[dict[str, Any]] = []
        for p in with_email:
            email = p.email or ""
            customer_id, opt_in_at = who.get(email, (None, None))
            for s in p.suppressions:
                mine = is_ours(s, p, ours, self.custom_source)
                state = (OptoutState.OURS if mine
                         else OptoutState.SUPERSEDED if opt_in_at is not None
                         and s.at <= opt_in_at
                         else OptoutState.NEW)
                rows.append({"email": email, "customer_id": customer_id,
                             "reason": s.reason[:32], "at": s.at,
                             "source": "ours" if mine else "klaviyo",
                             "method": (p.method_detail or p.method or None),
                             "state": state.value, "recorded_at": now})
        fresh = self._new_only(conn, rows)
        if fresh:
            # The consent pass and the optouts pass may record the same opt-out at once
            # (two daemon threads on PostgreSQL): the unique key lets the second go quietly.
            insert = (postgresql.insert if conn.dialect.name == "postgresql"
                      else sqlite.insert)(optouts)
            conn.execute(insert.on_conflict_do_nothing(
                index_elements=["email", "at", "reason"]), fresh)
        theirs = sum(1 for r in fresh if r["source"] == "klaviyo")
        return theirs, len(fresh) - theirs

    @staticmethod
    def _new_only(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Unique (email, at, reason): look first, so that a re-read page inserts nothing.
        seen: set[tuple[str, datetime, str]] = set()
        emails = sorted({r["email"] for r in rows})
        for start in range(0, len(emails), _IN_CHUNK):
            seen.update((e, at, reason) for e, at, reason in conn.execute(
                sa.select(optouts.c.email, optouts.c.at, optouts.c.reason)
                .where(optouts.c.email.in_(emails[start:start + _IN_CHUNK]))))
        out = []
        for r in rows:
            key = (r["email"], r["at"], r["reason"])
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def _customers(self, conn: sa.Connection, profiles: Sequence[KlaviyoConsent]
                   ) -> dict[str, tuple[str | None, datetime | None]]:
        """Per email: the business customer and their opt-in time now (the business's
        word first, then our consent_sync memory, then Klaviyo's external_id)."""
        emails = sorted({p.email or "" for p in profiles})
        found: dict[str, tuple[str | None, datetime | None]] = {}
        if self.business is not None:
            found.update(self.business(emails))
        missing = [e for e in emails if e not in found]
        for start in range(0, len(missing), _IN_CHUNK):
            found.update((e, (cid, None)) for e, cid in conn.execute(
                sa.select(consent_sync.c.email, consent_sync.c.customer_id)
                .where(consent_sync.c.email.in_(missing[start:start + _IN_CHUNK]))))
        for p in profiles:
            if p.email and p.email not in found and p.external_id:
                found[p.email] = (p.external_id, None)
        return found


class OptoutsPass:
    """One optouts pass at a time (:meth:`run_once`), plus the optional write-back."""

    def __init__(self, state_engine: Engine, api: ConsentApi, settings: ConsentSettings,
                 recorder: OptoutRecorder, writeback: Engine | None = None) -> None:
        self.engine = state_engine
        self.api = api
        self.settings = settings
        self.recorder = recorder
        self.writeback = writeback

    def run_once(self, stop: threading.Event | None = None, now: datetime | None = None
                 ) -> OptoutsReport:
        """Record what changed in Klaviyo since the cursor, page by page."""
        now = now or utcnow()
        text = meta.get(self.engine, OPTOUTS_CURSOR)
        cursor = datetime.fromisoformat(text) if text else None
        pages = profiles = theirs = mine = 0
        interrupted = False
        for page in self.api.suppressed_pages(cursor):
            if stop is not None and stop.is_set():
                interrupted = True
                break
            newest = max((s.at for p in page for s in p.suppressions), default=None)
            with _write(self.engine) as conn:
                new, ours = self.recorder.record(conn, page, now)
                if newest is not None and (cursor is None or newest > cursor):
                    cursor = newest
                    meta.put(conn, OPTOUTS_CURSOR, cursor.isoformat(), now)
            pages, profiles = pages + 1, profiles + len(page)
            theirs, mine = theirs + new, mine + ours
        written = self.write_back(now) if self.writeback is not None else 0
        emit = log.info if theirs or written else log.debug
        emit("optouts_pass_done", pages=pages, profiles=profiles, recorded=theirs,
             ours=mine, written_back=written)
        return OptoutsReport(pages, profiles, theirs, mine, written,
                             cursor.isoformat() if cursor else None, interrupted)

    def write_back(self, now: datetime | None = None) -> int:
        """Run the write-back statement once per new opt-out; returns how many ran."""
        assert self.writeback is not None
        now = now or utcnow()
        statement = sa.text(self.settings.writeback_statement)
        needs_id = ":customer_id" in self.settings.writeback_statement
        with self.engine.connect() as conn:
            due = [Optout.from_row(r) for r in conn.execute(
                sa.select(optouts).where(optouts.c.state == OptoutState.NEW.value)
                .order_by(optouts.c.id))]
        done = 0
        for row in due:
            if needs_id and row.customer_id is None:
                self._mark(row, last_error="no customer id known for this email")
                continue
            try:
                with self.writeback.begin() as business:
                    business.execute(statement, {"customer_id": row.customer_id,
                                                 "email": row.email})
            except sa.exc.SQLAlchemyError as exc:
                detail = str(getattr(exc, "orig", exc)).splitlines()[0]
                self._mark(row, last_error=detail[:2000])
                raise BusinessDataError(f"consent.writeback_statement failed: {detail}"
                                        ) from exc
            self._mark(row, state=OptoutState.WRITTEN.value, written_back_at=now,
                       last_error=None)
            done += 1
        return done

    def _mark(self, row: Optout, **values: Any) -> None:
        with _write(self.engine) as conn:
            conn.execute(optouts.update().where(optouts.c.email == row.email,
                                                optouts.c.at == row.at,
                                                optouts.c.reason == row.reason)
                         .values(**values))


def list_optouts(state_engine: Engine, since: datetime | None = None) -> list[Optout]:
    """Opt-outs made in Klaviyo (not ours), oldest first; ``since``: made at or after."""
    stmt = (sa.select(optouts).where(optouts.c.source == "klaviyo")
            .order_by(optouts.c.at, optouts.c.email))
    if since is not None:
        stmt = stmt.where(optouts.c.at >= since)
    with state_engine.connect() as conn:
        return [Optout.from_row(r) for r in conn.execute(stmt)]


def _write(engine: Engine) -> Any:
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE").begin()
    return engine.begin()
