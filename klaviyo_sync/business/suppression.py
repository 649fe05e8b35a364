"""Suppression: dead or not-opted-in customers go on Klaviyo's suppression list, once.

The runner (and the order tracker) show every customer they process to
:meth:`Suppressor.observe`, which records a *pending* row per email that needs suppressing;
:meth:`Suppressor.flush` sends the pending ones in requests of at most 100 emails. The
``suppressions`` table has one row per email ever, so 50 events of one dead customer make
one suppression, and the row says when and why.

Only suppression jobs are used: never Klaviyo's unsubscribe job (it can unsubscribe
profiles globally) and never a subscription. With ``unsuppress_reactivated`` on, a
customer seen active and opted in again is taken off the list (an ``unsuppressing`` row,
sent by the mirror job); off by default, because staying suppressed is the safe side.

States: pending -> sent; sent -> unsuppressing -> unsuppressed (setting on); a pending
row whose customer is active again before it was sent -> unsuppressed without any request;
unsuppressed -> pending if the customer dies or opts out again; an email Klaviyo refuses
on its own -> rejected (kept, with Klaviyo's answer, for `suppressions list`).
Two runners flushing the same rows at once send a harmless duplicate request.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from klaviyo_sync.business.customers import Customer
from klaviyo_sync.clock import iso_utc, iso_utc_or_none, utcnow
from klaviyo_sync.config import SuppressionSettings
from klaviyo_sync.exceptions import RejectedSendError, SendError
from klaviyo_sync.privacy.tombstones import NO_TOMBSTONES, Tombstones
from klaviyo_sync.queue.drivers import insert_ignoring_duplicates, write_transaction
from klaviyo_sync.state.schema import suppressions

log = structlog.get_logger(__name__)

#: Klaviyo's cap on emails per suppression (and unsuppression) job.
MAX_EMAILS_PER_REQUEST = 100
_IN_CHUNK = 1000


class SuppressionState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    UNSUPPRESSING = "unsuppressing"
    UNSUPPRESSED = "unsuppressed"
    REJECTED = "rejected"


class SuppressionSender(Protocol):
    def suppress_profiles(self, emails: Sequence[str]) -> Any: ...

    def unsuppress_profiles(self, emails: Sequence[str]) -> Any: ...


@dataclass(frozen=True)
class Suppression:
    """A row of the suppressions table."""

    email: str
    customer_id: str | None
    reason: str
    state: SuppressionState
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Suppression:
        m = row._mapping
        return cls(email=m["email"], customer_id=m["customer_id"], reason=m["reason"],
                   state=SuppressionState(m["state"]), attempts=m["attempts"] or 0,
                   last_error=m["last_error"], created_at=m["created_at"], sent_at=m["sent_at"])

    def to_json(self) -> dict[str, Any]:
        return {"email": self.email, "customer_id": self.customer_id, "reason": self.reason,
                "state": self.state.value, "attempts": self.attempts,
                "last_error": self.last_error,
                "created_at": iso_utc(self.created_at),
                "sent_at": iso_utc_or_none(self.sent_at)}


def suppression_reason(customer: Customer, dead_statuses: Iterable[str]) -> str | None:
    """Why ``customer`` must be suppressed ("status:Dead", "not_opted_in"), or None."""
    if customer.status is not None and customer.status in dead_statuses:
        return f"status:{customer.status}"
    if not customer.email_opt_in:
        return "not_opted_in"
    return None


class Suppressor:
    """The runner's suppression hook: observe customers, flush pending suppressions."""

    def __init__(self, state_engine: Engine, settings: SuppressionSettings,
                 tombstones: Callable[[], Tombstones] = lambda: NO_TOMBSTONES) -> None:
        self.engine = state_engine
        self.settings = settings
        self.tombstones = tombstones  # people who asked to be forgotten
        self._dead = frozenset(settings.dead_statuses)

    def observe(self, customers: Iterable[Customer], now: datetime | None = None) -> int:
        """Record what these customers need; returns rows newly pending or unsuppressing."""
        now = now or utcnow()
        wanted: dict[str, tuple[Customer, str]] = {}
        revived: dict[str, Customer] = {}
        for customer in customers:
            if not customer.email or "@" not in customer.email:
                continue
            email = customer.email.strip().lower()
            reason = suppression_reason(customer, self._dead)
            if reason is not None:
                wanted.setdefault(email, (customer, reason))
            elif self.settings.unsuppress_reactivated:
                revived.setdefault(email, customer)
        if not wanted and not revived:
            return 0
        with self._write() as conn:
            existing = self._states(conn, [*wanted, *revived])
            fresh = [{"email": e, "customer_id": c.id, "reason": r,
                      "state": SuppressionState.PENDING.value, "attempts": 0,
                      "created_at": now} for e, (c, r) in wanted.items() if e not in existing]
            changed = insert_ignoring_duplicates(conn, suppressions, fresh, "email")
            again = [e for e in wanted if existing.get(e) in (SuppressionState.UNSUPPRESSING,
                                                               SuppressionState.UNSUPPRESSED)]
            for email in again:
                customer, reason = wanted[email]
                changed += self._set(conn, email, state=SuppressionState.PENDING,
                                     reason=reason, customer_id=customer.id, attempts=0,
                                     last_error=None, created_at=now, sent_at=None)
            for email in revived:
                if existing.get(email) is SuppressionState.SENT:
                    changed += self._set(conn, email, state=SuppressionState.UNSUPPRESSING,
                                         attempts=0, last_error=None)
                elif existing.get(email) is SuppressionState.PENDING:
                    # Never sent: nothing to undo at Klaviyo.
                    self._set(conn, email, state=SuppressionState.UNSUPPRESSED, sent_at=now)
        if changed:
            log.info("suppressions_recorded", changed=changed)
        return changed

    def flush(self, sender: SuppressionSender, now: datetime | None = None) -> int:
        """Send pending (un)suppressions, <= 100 emails a request; returns emails done.

        A temporary failure (5xx, timeout, refused credentials) keeps the batch pending with
        its error and ends this flush: the next one tries again.
        """
        done = 0
        for state, target, call in (
                (SuppressionState.PENDING, SuppressionState.SENT, sender.suppress_profiles),
                (SuppressionState.UNSUPPRESSING, SuppressionState.UNSUPPRESSED,
                 sender.unsuppress_profiles)):
            emails = self._without_erased(self._due(state))
            for start in range(0, len(emails), MAX_EMAILS_PER_REQUEST):
                chunk = emails[start:start + MAX_EMAILS_PER_REQUEST]
                try:
                    done += self._send(call, chunk, target, now or utcnow())
                except SendError as exc:
                    self._failed(chunk, state, exc)
                    log.warning("suppression_send_failed", emails=len(chunk),
                                error=str(exc), kind=state.value)
                    return done
        return done

    def _without_erased(self, emails: list[str]) -> list[str]:
        # Suppressing creates the profile when Klaviyo has none: for a person who asked
        # to be forgotten that would undo the erasure. Their rows go instead.
        tombstones = self.tombstones()
        if not tombstones or not emails:
            return emails
        erased = [e for e in emails if tombstones.match(e, None) is not None]
        if erased:
            with self._write() as conn:
                conn.execute(suppressions.delete().where(suppressions.c.email.in_(erased)))
            log.info("suppressions_dropped_for_erasure", count=len(erased))
        return [e for e in emails if e not in set(erased)]

    def _send(self, call: Any, emails: list[str], target: SuppressionState,
              now: datetime) -> int:
        try:
            call(emails)
        except RejectedSendError as exc:
            # One malformed address must not keep 99 others off the list: bisect.
            if len(emails) == 1:
                with self._write() as conn:
                    self._set(conn, emails[0], state=SuppressionState.REJECTED,
                              attempts=suppressions.c.attempts + 1, last_error=str(exc)[:2000])
                log.warning("suppression_rejected", email=emails[0], error=str(exc))
                return 0
            half = len(emails) // 2
            return (self._send(call, emails[:half], target, now)
                    + self._send(call, emails[half:], target, now))
        with self._write() as conn:
            conn.execute(suppressions.update().where(suppressions.c.email.in_(emails))
                         .values(state=target.value, sent_at=now, last_error=None,
                                 attempts=suppressions.c.attempts + 1))
        log.info("suppressions_sent" if target is SuppressionState.SENT
                 else "unsuppressions_sent", emails=len(emails))
        return len(emails)

    def _failed(self, emails: list[str], state: SuppressionState, exc: Exception) -> None:
        with self._write() as conn:
            conn.execute(suppressions.update()
                         .where(suppressions.c.email.in_(emails),
                                suppressions.c.state == state.value)
                         .values(attempts=suppressions.c.attempts + 1,
                                 last_error=str(exc)[:2000]))

    def _due(self, state: SuppressionState) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(
                sa.select(suppressions.c.email).where(suppressions.c.state == state.value)
                .order_by(suppressions.c.created_at, suppressions.c.email)).scalars())

    @staticmethod
    def _states(conn: sa.Connection, emails: list[str]) -> dict[str, SuppressionState]:
        found: dict[str, SuppressionState] = {}
        for start in range(0, len(emails), _IN_CHUNK):
            rows = conn.execute(sa.select(suppressions.c.email, suppressions.c.state)
                                .where(suppressions.c.email.in_(emails[start:start + _IN_CHUNK])))
            found.update({email: SuppressionState(state) for email, state in rows})
        return found

    @staticmethod
    def _set(conn: sa.Connection, email: str, **values: Any) -> int:
        values = {k: (v.value if isinstance(v, SuppressionState) else v)
                  for k, v in values.items()}
        return conn.execute(suppressions.update().where(suppressions.c.email == email)
                            .values(**values)).rowcount

    def _write(self) -> Any:
        # The queue's write transaction: on SQLite it takes the write lock before reading.
        return write_transaction(self.engine)


def list_suppressions(state_engine: Engine, state: SuppressionState | None = None,
                      limit: int | None = None) -> list[Suppression]:
    """Rows of the suppressions table, newest first (`suppressions list`)."""
    stmt = sa.select(suppressions).order_by(suppressions.c.created_at.desc(),
                                            suppressions.c.email)
    if state is not None:
        stmt = stmt.where(suppressions.c.state == state.value)
    if limit is not None:
        stmt = stmt.limit(limit)
    with state_engine.connect() as conn:
        return [Suppression.from_row(r) for r in conn.execute(stmt)]
