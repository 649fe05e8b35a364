"""The initial reconciliation: every customer's business opt-in against Klaviyo's consent.

What Commerce7 does on connection. Klaviyo's profiles are read once (100 a page, their
consent included) and every customer is compared with the profile of their email. Each
disagreement gets one action (:class:`~klaviyo_sync.business.consent_rules.Action`):

- opted in, not subscribed in Klaviyo, no newer opt-out: subscribe (historical or live by
  the age of the consent); an older opt-out is recorded as superseded;
- opted in, with a newer Klaviyo opt-out: conflict, the opt-out recorded, not subscribed;
- not opted in, a Klaviyo opt-out not yet recorded: record it;
- subscribed in Klaviyo but not opted in with the business: the suppression rule.

``dry_run`` only reads: no state row, no request that writes. Otherwise the rows are
written and the subscriptions sent through the consent pass's own sending (so they get
its look-first and crash safety), and the summary goes to the audit trail.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from klaviyo_sync.business import consent_store as store
from klaviyo_sync.business.consent_records import KlaviyoConsent
from klaviyo_sync.business.consent_rules import (
    Action,
    ConsentState,
    is_historical,
    newer_optout,
    their_optouts,
    wants_email,
)
from klaviyo_sync.business.consent_source import ConsentCustomer
from klaviyo_sync.business.consent_store import ConsentReport
from klaviyo_sync.business.consent_sync import ConsentSync
from klaviyo_sync.business.optouts import our_suppressed
from klaviyo_sync.clock import iso_utc, utcnow
from klaviyo_sync.state.schema import optouts


@dataclass(frozen=True)
class Disagreement:
    """One row of the reconciliation's table."""

    customer_id: str | None
    email: str
    action: Action
    business_opt_in_at: datetime | None
    klaviyo: str  # Klaviyo's side in a few words

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "email": self.email,
                "action": self.action.value,
                "business_opt_in_at": (iso_utc(self.business_opt_in_at)
                                       if self.business_opt_in_at else None),
                "klaviyo": self.klaviyo}


@dataclass
class ReconcileReport:
    rows: list[Disagreement]
    counts: Counter[str]
    customers: int
    profiles: int
    applied: ConsentReport | None = None

    def summary(self) -> str:
        parts = ", ".join(f"{a.name.lower()}={self.counts.get(a.name.lower(), 0)}"
                          for a in Action)
        return f"{self.customers} customers, {self.profiles} Klaviyo profiles: {parts}"


class AuditTrail(Protocol):
    """Where the summary goes (senders/audit.py ``AuditLog``)."""

    def record(self, method: str, endpoint: str, items: int, status_code: int | None,
               duration_ms: float, error_codes: list[str] | None = None) -> None: ...

    def flush(self) -> int: ...


class Reconciler:
    """Compares, and (unless dry-run) applies, through a :class:`ConsentSync`."""

    def __init__(self, sync: ConsentSync, audit: AuditTrail | None = None) -> None:
        self.sync = sync
        self.audit = audit

    def run(self, dry_run: bool, now: datetime | None = None) -> ReconcileReport:
        now = now or utcnow()
        started = time.perf_counter()
        sync = self.sync
        source = sync.settings.consent.custom_source
        threshold = sync.settings.consent.historical_after_h(sync.settings.log)
        dead = frozenset(sync.settings.suppression.dead_statuses)
        klaviyo: dict[str, KlaviyoConsent] = {}
        for profiles in sync.api.all_pages():
            klaviyo.update({p.email: p for p in profiles if p.email})
        with sync.engine.connect() as conn:
            ours = our_suppressed(conn, klaviyo)
            recorded = {(e, at, r) for e, at, r in conn.execute(
                sa.select(optouts.c.email, optouts.c.at, optouts.c.reason))}
        rows: list[Disagreement] = []
        counts: Counter[str] = Counter()
        customers = 0
        plans: list[tuple[ConsentCustomer, ConsentState, str | None]] = []
        matched: set[str] = set()
        for page in sync.reader.read_all():
            customers += len(page)
            for c in page:
                email = c.email
                if email is None:
                    continue
                matched.add(email)
                held = klaviyo.get(email)
                theirs = their_optouts(held, ours, source) if held else []
                unrecorded = [s for s in theirs if (email, s.at, s.reason) not in recorded]
                if wants_email(c, dead):
                    later = newer_optout(c.opt_in_at, theirs)
                    if held is not None and held.subscribed:
                        plans.append((c, ConsentState.SUBSCRIBED, "already subscribed in "
                                      "Klaviyo"))
                        continue
                    if later is not None:
                        action = Action.CONFLICT
                        plans.append((c, ConsentState.CONFLICT,
                                      f"{later.reason} in Klaviyo at {iso_utc(later.at)}"))
                    else:
                        action = (Action.SUBSCRIBE_HISTORICAL
                                  if is_historical(c.opt_in_at, now, threshold)
                                  else Action.SUBSCRIBE_LIVE)
                        plans.append((c, ConsentState.PENDING, None))
                    side = _side(held, theirs)
                elif held is not None and held.subscribed:
                    action, side = Action.NOT_OPTED_IN, "subscribed"
                    plans.append((c, ConsentState.OPTED_OUT, "not opted in with the "
                                  "business"))
                elif unrecorded:
                    action, side = Action.RECORD_OPTOUT, _side(held, theirs)
                else:
                    continue
                counts[action.name.lower()] += 1
                rows.append(Disagreement(c.id, email, action, c.opt_in_at, side))
        for email, held in klaviyo.items():
            theirs = their_optouts(held, ours, source)
            if email not in matched and any((email, s.at, s.reason) not in recorded
                                            for s in theirs):
                counts[Action.RECORD_OPTOUT.name.lower()] += 1
                rows.append(Disagreement(None, email, Action.RECORD_OPTOUT, None,
                                         _side(held, theirs)))
        report = ReconcileReport(rows, counts, customers, len(klaviyo))
        if not dry_run:
            report.applied = self._apply(plans, klaviyo, now)
            if self.audit is not None:
                self.audit.record("RECON", f"consent reconcile: {report.summary()}"[:256],
                                  len(rows), None, (time.perf_counter() - started) * 1000)
                self.audit.flush()
        return report

    def _apply(self, plans: list[tuple[ConsentCustomer, ConsentState, str | None]],
               klaviyo: dict[str, KlaviyoConsent], now: datetime) -> ConsentReport:
        sync = self.sync
        known = store.known(sync.engine, [c.id for c, _s, _r in plans])
        rows = []
        turned_off = []
        for c, state, reason in plans:
            row = known.get(c.id)
            if row is not None and row.state in (ConsentState.SUBSCRIBED,
                                                 ConsentState.SENDING) \
                    and state is not ConsentState.OPTED_OUT:
                continue
            if state is ConsentState.OPTED_OUT:
                turned_off.append(c.customer)
                if row is None:
                    continue
            planned = sync.row_for(c, state, now, reason)
            if state is ConsentState.SUBSCRIBED:
                planned["subscribed_at"] = now
            rows.append(planned)
        with store.write(sync.engine) as conn:
            store.upsert(conn, rows, known)
            sync.recorder.record(conn, list(klaviyo.values()), now)
        if turned_off and sync.observer is not None:
            sync.observer.observe(turned_off)
        report = ConsentReport()
        sync.subscriber.send_pending(report, now=now)
        return report


def _side(held: KlaviyoConsent | None, theirs: list[Any]) -> str:
    if held is None:
        return "no profile"
    if theirs:
        newest = max(theirs, key=lambda s: s.at)
        return f"{newest.reason} at {iso_utc(newest.at)}"
    return held.consent.lower()
