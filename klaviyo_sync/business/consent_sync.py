"""The consent pass: customers whose email opt-in turned on are subscribed in Klaviyo.

Customers changed since a watermark on ``customers.updated_at`` (minus the orders'
late-commit overlap) are compared with ``consent_sync``; a new opt-in becomes a *pending*
row, committed with the watermark in one transaction, so a crash re-reads at most the
page in flight and plans nothing twice. The pending rows are then sent by the
:class:`~klaviyo_sync.business.consent_send.Subscriber` (look at Klaviyo first, never
over a newer opt-out, never twice). A customer whose opt-in turns off after we subscribed
them is shown to the suppression rule (today's behaviour) and becomes *opted_out*.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog
from sqlalchemy.engine import Engine

from klaviyo_sync.business import consent_store as store
from klaviyo_sync.business.consent_records import ConsentApi
from klaviyo_sync.business.consent_rules import ConsentState, is_historical, wants_email
from klaviyo_sync.business.consent_send import Subscriber
from klaviyo_sync.business.consent_source import (
    ConsentCustomer,
    ConsentReader,
    CustomerCursor,
    e164_problem,
)
from klaviyo_sync.business.consent_store import ConsentReport, ConsentRow, list_consent
from klaviyo_sync.business.optouts import OptoutRecorder
from klaviyo_sync.business.orders import (
    parse_raw_time,
    raw_time_from_text,
    raw_time_to_text,
    shift_raw_time,
)
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import Settings
from klaviyo_sync.privacy.tombstones import NO_TOMBSTONES, Tombstones
from klaviyo_sync.state import meta

log = structlog.get_logger(__name__)

CONSENT_WATERMARK = "consent_watermark"  # raw customers.updated_at read up to


class CustomerObserver(Protocol):
    """What the pass needs of the suppressor (the Dead/opted-out rule)."""

    def observe(self, customers: Any) -> int: ...


class ConsentSync:
    """One consent pass at a time (:meth:`run_once`)."""

    def __init__(self, settings: Settings, state_engine: Engine, reader: ConsentReader,
                 api: ConsentApi, recorder: OptoutRecorder,
                 observer: CustomerObserver | None = None, text_times: bool = False,
                 on_close: Callable[[], None] | None = None,
                 tombstones: Callable[[], Tombstones] = lambda: NO_TOMBSTONES) -> None:
        self.settings = settings
        self.engine = state_engine
        #: People who asked to be forgotten: never subscribed (that would re-create the
        #: profile Klaviyo deleted). Read fresh at each pass.
        self._tombstone_source = tombstones
        self._tombstones = NO_TOMBSTONES
        self.reader = reader
        self.api = api
        self.recorder = recorder
        self.observer = observer
        self.subscriber = Subscriber(state_engine, api, recorder, settings.consent)
        self._dead = frozenset(settings.suppression.dead_statuses)
        self._threshold_h = settings.consent.historical_after_h(settings.log)
        self._text_times = text_times
        self._on_close = on_close

    def run_once(self, stop: threading.Event | None = None, now: datetime | None = None
                 ) -> ConsentReport:
        """Plan what changed since the watermark, then send every pending subscription."""
        now = now or utcnow()
        report = ConsentReport()
        self._tombstones = self._tombstone_source()
        self.subscriber.resolve_in_flight(report)
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
            self.subscriber.send_pending(report, stop, now)
        emit = log.info if report.counts or report.error else log.debug
        emit("consent_pass_done", customers=report.customers_read, requests=report.requests,
             error=report.error, **report.counts)
        return report

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def _plan_page(self, page: Sequence[ConsentCustomer], watermark: Any, now: datetime,
                   report: ConsentReport) -> Any:
        known = store.known(self.engine, [c.id for c in page])
        rows, turned_off = [], []
        for customer in page:
            if self._tombstones and self._tombstones.match(
                    customer.customer.email, customer.id) is not None:
                report.counts["erased_skipped"] += 1
                continue
            row = self.plan(customer, known.get(customer.id), now)
            if row is None:
                continue
            if row["state"] == ConsentState.OPTED_OUT.value:
                turned_off.append(customer.customer)
            rows.append(row)
            report.counts[f"planned_{row['state']}"] += 1
        last = page[-1].raw_updated_at
        if watermark is None or parse_raw_time(last) > parse_raw_time(watermark):
            watermark = last  # the overlap re-reads older rows: never move back
        with store.write(self.engine) as conn:
            store.upsert(conn, rows, known)
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
                return self.row_for(customer, ConsentState.OPTED_OUT, now,
                                    reason="the business opt-in turned off")
            return None
        if row is not None:
            if row.state in (ConsentState.SUBSCRIBED, ConsentState.PENDING,
                             ConsentState.SENDING):
                return None
            if row.state in (ConsentState.CONFLICT, ConsentState.REFUSED) \
                    and row.consented_at == customer.opt_in_at:
                return None  # decided for this very opt-in already
        return self.row_for(customer, ConsentState.PENDING, now)

    def row_for(self, customer: ConsentCustomer, state: ConsentState, now: datetime,
                reason: str | None = None) -> dict[str, Any]:
        """A consent_sync row for ``customer`` in ``state`` (SMS checked when pending)."""
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


__all__ = ["ConsentReport", "ConsentRow", "ConsentSync", "list_consent"]
