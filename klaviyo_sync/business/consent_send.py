"""Sending subscriptions: pending consent_sync rows become subscription jobs, safely.

Per batch of up to 1,000 (historical and live apart):

1. look first: Klaviyo's consent for the batch is read back; a customer whose Klaviyo
   opt-out is newer than their business opt-in becomes a *conflict* (never subscribed:
   subscribing would lift the opt-out), one already subscribed is just marked so, and
   every opt-out seen is recorded for `optouts list` before a subscription can lift it;
2. the rows are marked *sending* (committed), the job is sent, then they are marked
   *subscribed* (committed). A crash in between leaves *sending* rows, which the next pass
   reads back from Klaviyo (:meth:`Subscriber.resolve_in_flight`) before sending
   anything: nobody is subscribed twice.

A 400 for the whole job names its offending profile: that one is *refused* with
Klaviyo's detail and the rest go again; an error naming none is halved until one does.
"""

from __future__ import annotations

import re
import secrets
import threading
from datetime import datetime

import structlog
from sqlalchemy.engine import Engine

from klaviyo_sync.business import consent_store as store
from klaviyo_sync.business.consent_records import SUBSCRIBE_MAX, ConsentApi, Subscribe
from klaviyo_sync.business.consent_rules import ConsentState, newer_optout, their_optouts
from klaviyo_sync.business.consent_store import ConsentReport, ConsentRow
from klaviyo_sync.business.optouts import OptoutRecorder, our_suppressed
from klaviyo_sync.clock import iso_utc, utcnow
from klaviyo_sync.config import ConsentSettings
from klaviyo_sync.exceptions import RejectedSendError, SendError
from klaviyo_sync.state.schema import consent_sync

log = structlog.get_logger(__name__)

_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)")


class Subscriber:
    """Sends the pending subscriptions of ``consent_sync`` through a :class:`ConsentApi`."""

    def __init__(self, state_engine: Engine, api: ConsentApi, recorder: OptoutRecorder,
                 settings: ConsentSettings) -> None:
        self.engine = state_engine
        self.api = api
        self.recorder = recorder
        self.settings = settings
        self._list_checked = False

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
            historical = store.first_pending_kind(self.engine)
            if historical is None:
                return
            batch = store.in_state(self.engine, ConsentState.PENDING, SUBSCRIBE_MAX,
                                   historical)
            try:
                self._send_batch(batch, report, now)
            except SendError as exc:
                report.error = str(exc)
                log.warning("consent_send_failed", profiles=len(batch), error=str(exc))
                return

    def check_list(self) -> str | None:
        """Why subscriptions cannot go to ``[consent] list_id`` (no such list), or None.

        Checked once per instance; a double opt-in list is only worth a warning: its live
        subscriptions get a confirmation email (historical ones never do).
        """
        list_id = self.settings.list_id
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

    def resolve_in_flight(self, report: ConsentReport) -> None:
        """Rows left *sending* by a crash: subscribed if Klaviyo shows it, else pending."""
        rows = store.in_state(self.engine, ConsentState.SENDING)
        if not rows:
            return
        now = utcnow()
        found = self.api.consent_of([r.email or "" for r in rows]) if self.api.reads else {}
        done = {r.customer_id for r in rows
                if (held := found.get(r.email or "")) is not None and held.subscribed}
        with store.write(self.engine) as conn:
            store.update(conn, sorted(done), now, state=ConsentState.SUBSCRIBED.value,
                         batch=None, subscribed_at=now)
            store.update(conn, [r.customer_id for r in rows if r.customer_id in done
                                and r.sms_state is ConsentState.PENDING], now,
                         sms_state=ConsentState.SUBSCRIBED.value)
            store.update(conn, [r.customer_id for r in rows if r.customer_id not in done],
                         now, state=ConsentState.PENDING.value, batch=None)
        report.counts["resolved_in_flight"] += len(rows)
        log.info("subscriptions_in_flight_resolved", subscribed=len(done),
                 again=len(rows) - len(done))

    # --- one batch ---------------------------------------------------------------------

    def _send_batch(self, batch: list[ConsentRow], report: ConsentReport, now: datetime
                    ) -> None:
        go = self._look(batch, report, now)
        if not go:
            return
        store.set_rows(self.engine, [r.customer_id for r in go], now,
                       state=ConsentState.SENDING.value, batch=secrets.token_hex(8),
                       attempts=consent_sync.c.attempts + 1)
        historical = go[0].historical
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
                store.set_rows(self.engine, [bad.customer_id], now,
                               state=ConsentState.REFUSED.value, batch=None,
                               reason=str(exc)[:2000])
                report.counts["refused"] += 1
                log.warning("subscription_refused", customer_id=bad.customer_id,
                            error=str(exc))
                if group:
                    groups.append(group)
                continue
            self._done(group, historical, report, now)

    def _done(self, group: list[ConsentRow], historical: bool, report: ConsentReport,
              now: datetime) -> None:
        with store.write(self.engine) as conn:
            store.update(conn, [r.customer_id for r in group], now,
                         state=ConsentState.SUBSCRIBED.value, batch=None, subscribed_at=now)
            store.update(conn, [r.customer_id for r in group
                                if r.sms_state is ConsentState.PENDING],
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
        with store.write(self.engine) as conn:
            ours = our_suppressed(conn, found)
            self.recorder.record(conn, list(found.values()), now)
            for row in batch:
                held = found.get(row.email or "")
                later = newer_optout(row.consented_at, their_optouts(
                    held, ours, self.settings.custom_source)) if held else None
                if later is not None:
                    opted_in = iso_utc(row.consented_at) if row.consented_at else "?"
                    store.update(conn, [row.customer_id], now,
                                 state=ConsentState.CONFLICT.value,
                                 reason=(f"{later.reason} in Klaviyo at {iso_utc(later.at)} "
                                         f"is newer than the business opt-in at {opted_in}"))
                    report.counts["conflict"] += 1
                elif held is not None and held.subscribed:
                    store.update(conn, [row.customer_id], now,
                                 state=ConsentState.SUBSCRIBED.value,
                                 reason="already subscribed in Klaviyo")
                    report.counts["already_subscribed"] += 1
                else:
                    go.append(row)
        return go

    @staticmethod
    def _subscribe(row: ConsentRow) -> Subscribe:
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
