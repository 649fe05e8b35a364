"""The consent pass: customers whose email opt-in turned on are subscribed in Klaviyo.

Customers changed since a watermark on ``customers.updated_at`` (minus the orders'
late-commit overlap) are compared with ``consent_sync``; a new opt-in becomes a *pending*
row, committed with the watermark in one transaction. Pending rows then go out in
subscription jobs of up to 1,000, historical and live apart:

1. look first: Klaviyo's consent for the batch is read back; a customer whose Klaviyo
   opt-out is newer than their business opt-in becomes a *conflict* (never subscribed:
   subscribing would lift the opt-out), one already subscribed is just marked so, and every
   opt-out seen is recorded for `optouts list` before a subscription can lift it;
2. the rows are marked *sending* (committed), the job is sent, then they are marked
   *subscribed* (committed). A crash in between leaves *sending* rows, which the next pass
   reads back from Klaviyo before sending anything: nobody is subscribed twice.

A 400 for the whole job names its offending profile: that one is *refused* with Klaviyo's
detail, the rest go again. A customer whose opt-in turns off after we subscribed them is
shown to the suppression rule (today's behaviour) and becomes *opted_out*.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from klaviyo_sync.business.consent_rules import (
    ConsentState,
    is_historical,
    newer_optout,
    their_optouts,
    wants_email,
)
from klaviyo_sync.business.consent_source import (
    ConsentCustomer,
    ConsentReader,
    CustomerCursor,
    e164_problem,
)
from klaviyo_sync.business.optouts import OptoutRecorder, our_suppressed
from klaviyo_sync.business.orders import (
    parse_raw_time,
    raw_time_from_text,
    raw_time_to_text,
    shift_raw_time,
)
from klaviyo_sync.clock import iso_utc, utcnow
from klaviyo_sync.config import Settings
from klaviyo_sync.exceptions import RejectedSendError, SendError
from klaviyo_sync.senders.consent import SUBSCRIBE_MAX, ConsentApi, KlaviyoConsent, Subscribe
from klaviyo_sync.state import meta
from klaviyo_sync.state.schema import consent_sync

log = structlog.get_logger(__name__)

CONSENT_WATERMARK = "consent_watermark"  # raw customers.updated_at read up to
_IN_CHUNK = 500
_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)")


class CustomerObserver(Protocol):
    """What the pass needs of the suppressor (the Dead/opted-out rule)."""

    def observe(self, customers: Any) -> int: ...


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


class ConsentSync:
    """One consent pass at a time (:meth:`run_once`)."""

    def __init__(self, settings: Settings, state_engine: Engine, reader: ConsentReader,
                 api: ConsentApi, recorder: OptoutRecorder,
                 observer: CustomerObserver | None = None, text_times: bool = False,
                 on_close: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.engine = state_engine
        self.reader = reader
        self.api = api
        self.recorder = recorder
        self.observer = observer
        self._dead = frozenset(settings.suppression.dead_statuses)
        self._threshold_h = settings.consent.historical_after_h(settings.log)
        self._text_times = text_times
        self._on_close = on_close
        self._list_checked = False

    def run_once(self, stop: threading.Event | None = None, now: datetime | None = None
                 ) -> ConsentReport:
        """Plan what changed since the watermark, then send every pending subscription."""
        now = now or utcnow()
        report = ConsentReport()
        self.resolve_in_flight(report)
        text = meta.get(self.engine, CONSENT_WATERMARK)
        watermark = raw_time_from_text(text, self._text_times) if text else None
        since = (shift_raw_time(watermark, -self.settings.orders.overlap_s)
                 if watermark is not None else None)
        cursor: CustomerCursor | None = None
        while True:
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
            page = self.reader.read_changed(cursor, since)
            if not page:
                break
            watermark = self._plan_page(page, watermark, now, report)
            report.customers_read += len(page)
            cursor = CustomerCursor(page[-1].raw_updated_at, page[-1].raw_id)
            if len(page) < self.reader.page_size:
                break
        if not report.interrupted:
            self.send_pending(report, stop, now)
        emit = log.info if report.counts or report.error else log.debug
        emit("consent_pass_done", customers=report.customers_read, requests=report.requests,
             error=report.error, **report.counts)
        return report

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    # --- planning ---------------------------------------------------------------------

    def _plan_page(self, page: Sequence[ConsentCustomer], watermark: Any, now: datetime,
                   report: ConsentReport) -> Any:
        known = self.known([c.id for c in page])
        rows, turned_off = [], []
        for customer in page:
            row = self.plan(customer, known.get(customer.id), now)
            if row is None:
                continue
            if row["state"] == ConsentState.OPTED_OUT.value:
                turned_off.append(customer.customer)
            rows.append(row)
            report.counts[f"planned_{row['state']}"] += 1
        last = page[-1].raw_updated_at
        if watermark is None or parse_raw_time(last) > parse_raw_time(watermark):
            watermark = last
        with _write(self.engine) as conn:
            self.upsert(conn, rows, known)
            meta.put(conn, CONSENT_WATERMARK, raw_time_to_text(watermark), now)
        if turned_off and self.observer is not None:
            self.observer.observe(turned_off)
        return watermark

    def plan(self, customer: ConsentCustomer, row: ConsentRow | None, now: datetime
             ) -> dict[str, Any] | None:
        """The consent_sync row this customer needs now, or None (nothing changes)."""
        if not wants_email(customer, self._dead):
            if row is not None and row.state in (ConsentState.SUBSCRIBED, ConsentState.PENDING,
                                                 ConsentState.CONFLICT):
                return self._row(customer, row, ConsentState.OPTED_OUT, now,
                                 reason="the business opt-in turned off")
            return None
        if row is not None:
            if row.state in (ConsentState.SUBSCRIBED, ConsentState.PENDING,
                             ConsentState.SENDING):
                return None
            if row.state in (ConsentState.CONFLICT, ConsentState.REFUSED) \
                    and row.consented_at == customer.opt_in_at:
                return None  # decided for this very opt-in already
        return self._row(customer, row, ConsentState.PENDING, now)

    def _row(self, customer: ConsentCustomer, row: ConsentRow | None, state: ConsentState,
             now: datetime, reason: str | None = None) -> dict[str, Any]:
        sms_state: ConsentState | None = None
        if state is ConsentState.PENDING and self.settings.consent.sms_phone_column \
                and customer.sms_opt_in:
            problem = e164_problem(customer.phone)
            if problem is not None:
                sms_state = ConsentState.INVALID_PHONE
                reason = f"phone {customer.phone!r} {problem}: SMS not subscribed"
            else:
                sms_state = ConsentState.PENDING
        return {"customer_id": customer.id, "email": customer.email,
                "phone": (customer.phone or "")[:32] or None, "state": state.value,
                "sms_state": sms_state.value if sms_state else None,
                "consented_at": customer.opt_in_at,
                "historical": is_historical(customer.opt_in_at, now, self._threshold_h),
                "batch": None, "reason": reason, "attempts": 0, "updated_at": now}

    # --- sending -----------------------------------------------------------------------

    def check_list(self) -> str | None:
        """Why subscriptions cannot go to ``[consent] list_id`` (no such list), or None.

        Checked once per instance; a double opt-in list is only worth a warning: its live
        subscriptions get a confirmation email (historical ones never do).
        """
        list_id = self.settings.consent.list_id
        if not list_id or self._list_checked:
            return None
        process = self.api.list_opt_in(list_id)
        if process is None:
            return f"consent.list_id: Klaviyo has no list {list_id!r} (see GET /api/lists)"
        if process == "double_opt_in":
            log.warning("consent_list_double_opt_in", list_id=list_id,
                        hint="live subscriptions get a confirmation email first")
        self._list_checked = True
        return None

    def send_pending(self, report: ConsentReport, stop: threading.Event | None = None,
                     now: datetime | None = None) -> None:
        """Send every pending subscription, looking at Klaviyo's consent first."""
        now = now or utcnow()
        try:
            report.error = self.check_list()
        except SendError as exc:
            report.error = str(exc)
        if report.error:
            log.warning("consent_send_failed", error=report.error)
            return
        while stop is None or not stop.is_set():
            batch = self._due()
            if not batch:
                return
            try:
                self._send_batch(batch, report, now)
            except SendError as exc:
                report.error = str(exc)
                log.warning("consent_send_failed", profiles=len(batch), error=str(exc))
                return

    def _send_batch(self, batch: list[ConsentRow], report: ConsentReport, now: datetime
                    ) -> None:
        go = self._look(batch, report, now)
        if not go:
            return
        token = secrets.token_hex(8)
        self._set([r.customer_id for r in go], now, state=ConsentState.SENDING.value,
                  batch=token, attempts=consent_sync.c.attempts + 1)
        historical = go[0].historical
        # A refused job is all or nothing: drop the profile its error points at and send
        # the rest again; an error that points at none is halved until it does.
        groups = [go]
        while groups:
            group = groups.pop()
            try:
                self.api.subscribe([self._subscribe(r) for r in group], historical)
                report.requests += 1
            except RejectedSendError as exc:
                report.requests += 1
                offender = self._offender(exc, len(group))
                if offender is None:
                    half = len(group) // 2
                    groups += [group[half:], group[:half]]
                    continue
                bad = group.pop(offender)
                self._set([bad.customer_id], now, state=ConsentState.REFUSED.value,
                          batch=None, reason=str(exc)[:2000])
                report.counts["refused"] += 1
                log.warning("subscription_refused", customer_id=bad.customer_id,
                            error=str(exc))
                if group:
                    groups.append(group)
                continue
            self._done(group, historical, report, now)

    def _done(self, group: list[ConsentRow], historical: bool, report: ConsentReport,
              now: datetime) -> None:
        self._set([r.customer_id for r in group], now, state=ConsentState.SUBSCRIBED.value,
                  batch=None, subscribed_at=now)
        self._set([r.customer_id for r in group if r.sms_state is ConsentState.PENDING],
                  now, sms_state=ConsentState.SUBSCRIBED.value)
        report.counts["subscribed_historical" if historical else "subscribed_live"] \
            += len(group)
        log.info("profiles_subscribed", profiles=len(group), historical=historical)

    def _look(self, batch: list[ConsentRow], report: ConsentReport, now: datetime
              ) -> list[ConsentRow]:
        """Klaviyo's consent for the batch: conflicts and the already subscribed drop out."""
        if not self.api.reads:
            return batch
        found = self.api.consent_of([r.email or "" for r in batch])
        go: list[ConsentRow] = []
        with _write(self.engine) as conn:
            ours = our_suppressed(conn, found)
            self.recorder.record(conn, list(found.values()), now)
            for row in batch:
                held = found.get(row.email or "")
                later = newer_optout(row.consented_at, their_optouts(
                    held, ours, self.settings.consent.custom_source)) if held else None
                if later is not None:
                    _update(conn, [row.customer_id], now, state=ConsentState.CONFLICT.value,
                            reason=(f"{later.reason} in Klaviyo at {iso_utc(later.at)} is "
                                    f"newer than the business opt-in at "
                                    f"{iso_utc(row.consented_at) if row.consented_at else '?'}"))
                    report.counts["conflict"] += 1
                elif held is not None and held.subscribed:
                    _update(conn, [row.customer_id], now,
                            state=ConsentState.SUBSCRIBED.value, reason="already subscribed "
                            "in Klaviyo")
                    report.counts["already_subscribed"] += 1
                else:
                    go.append(row)
        return go

    def resolve_in_flight(self, report: ConsentReport) -> None:
        """Rows left *sending* by a crash: subscribed if Klaviyo shows it, else pending."""
        with self.engine.connect() as conn:
            rows = [ConsentRow.from_row(r) for r in conn.execute(
                sa.select(consent_sync).where(
                    consent_sync.c.state == ConsentState.SENDING.value))]
        if not rows:
            return
        now = utcnow()
        found = self.api.consent_of([r.email or "" for r in rows]) if self.api.reads else {}
        done = [r.customer_id for r in rows
                if (held := found.get(r.email or "")) is not None and held.subscribed]
        again = [r.customer_id for r in rows if r.customer_id not in set(done)]
        self._set(done, now, state=ConsentState.SUBSCRIBED.value, batch=None,
                  subscribed_at=now)
        self._set([r.customer_id for r in rows if r.customer_id in set(done)
                   and r.sms_state is ConsentState.PENDING], now,
                  sms_state=ConsentState.SUBSCRIBED.value)
        self._set(again, now, state=ConsentState.PENDING.value, batch=None)
        report.counts["resolved_in_flight"] += len(rows)
        log.info("subscriptions_in_flight_resolved", subscribed=len(done), again=len(again))

    def _subscribe(self, row: ConsentRow) -> Subscribe:
        return Subscribe(email=row.email, phone=row.phone, consented_at=row.consented_at,
                         email_marketing=True,
                         sms_marketing=row.sms_state is ConsentState.PENDING)

    @staticmethod
    def _offender(exc: RejectedSendError, size: int) -> int | None:
        for error in exc.errors or []:
            pointer = ((error.get("source") or {}).get("pointer") or "")
            match = _POINTER.match(pointer)
            if match and int(match.group(1)) < size:
                return int(match.group(1))
        return 0 if size == 1 else None

    # --- state database ------------------------------------------------------------------

    def _due(self) -> list[ConsentRow]:
        with self.engine.connect() as conn:
            first = conn.execute(
                sa.select(consent_sync.c.historical)
                .where(consent_sync.c.state == ConsentState.PENDING.value)
                .order_by(consent_sync.c.historical.desc()).limit(1)).scalar()
            if first is None:
                return []
            return [ConsentRow.from_row(r) for r in conn.execute(
                sa.select(consent_sync)
                .where(consent_sync.c.state == ConsentState.PENDING.value,
                       consent_sync.c.historical == bool(first))
                .order_by(consent_sync.c.customer_id).limit(SUBSCRIBE_MAX))]

    def known(self, ids: Sequence[str]) -> dict[str, ConsentRow]:
        found: dict[str, ConsentRow] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), _IN_CHUNK):
                for r in conn.execute(sa.select(consent_sync).where(
                        consent_sync.c.customer_id.in_(ids[start:start + _IN_CHUNK]))):
                    row = ConsentRow.from_row(r)
                    found[row.customer_id] = row
        return found

    @staticmethod
    def upsert(conn: sa.Connection, rows: list[dict[str, Any]],
               known: dict[str, ConsentRow]) -> None:
        inserts = [r for r in rows if r["customer_id"] not in known]
        updates = [{**r, "b_id": r["customer_id"]} for r in rows if r["customer_id"] in known]
        if inserts:
            conn.execute(consent_sync.insert(), inserts)
        if updates:
            for r in updates:
                r.pop("customer_id")
            conn.execute(consent_sync.update().where(
                consent_sync.c.customer_id == sa.bindparam("b_id")), updates)

    def _set(self, ids: list[str], now: datetime, **values: Any) -> None:
        if ids:
            with _write(self.engine) as conn:
                _update(conn, ids, now, **values)


def _update(conn: sa.Connection, ids: list[str], now: datetime, **values: Any) -> None:
    for start in range(0, len(ids), _IN_CHUNK):
        conn.execute(consent_sync.update()
                     .where(consent_sync.c.customer_id.in_(ids[start:start + _IN_CHUNK]))
                     .values(updated_at=now, **values))


def list_consent(state_engine: Engine, state: ConsentState | None = None
                 ) -> list[ConsentRow]:
    """consent_sync rows (``state`` matches the email or the SMS state), by customer id."""
    stmt = sa.select(consent_sync).order_by(consent_sync.c.customer_id)
    if state is not None:
        stmt = stmt.where(sa.or_(consent_sync.c.state == state.value,
                                 consent_sync.c.sms_state == state.value))
    with state_engine.connect() as conn:
        return [ConsentRow.from_row(r) for r in conn.execute(stmt)]


def _write(engine: Engine) -> Any:
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE").begin()
    return engine.begin()


__all__ = ["ConsentReport", "ConsentRow", "ConsentSync", "KlaviyoConsent", "list_consent"]
