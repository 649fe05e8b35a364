"""`klaviyo-sync forget`: honour one erasure request, in Klaviyo and in our own state.

The steps, each safe to repeat, so that a crash at any moment followed by another
`forget` ends where a clean run ends:

1. find everyone this person is in our copies (the business database and the queue link
   an email to a customer id);
2. record the request (keyed hashes only) and commit: the tombstone exists from here on,
   so nothing of theirs is sent while the rest happens;
3. erase the local copies in one transaction (and the dry-run outbox);
4. ask Klaviyo to delete the profile (a data-privacy deletion job per email, or by
   Klaviyo's profile id when only the customer id is known), retried like any request;
5. record Klaviyo's answer. A request already answered is not sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.business.customers import Customer
from klaviyo_sync.clock import utcnow
from klaviyo_sync.exceptions import KlaviyoSyncError, RetryableSendError, SendError
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.privacy.erasure import Person, count_local, erase_local, erase_outbox
from klaviyo_sync.privacy.tombstones import ErasureState, Hasher
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.senders.base import Sender
from klaviyo_sync.state.db import erasing
from klaviyo_sync.state.schema import erasures

log = get_logger(__name__)

#: Attempts at the deletion request when Klaviyo answers 5xx or not at all.
DELETION_ATTEMPTS = 5

#: Finds the business customers of some emails and customer ids (None: no business DB).
CustomerFinder = Callable[[set[str], set[str]], list[Customer]]


@dataclass
class ForgetResult:
    """What one `forget` did (or, with ``dry_run``, would do)."""

    erasure_id: int | None
    removed: dict[str, int]
    outbox_lines: int
    klaviyo: str
    dry_run: bool
    identifiers: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"erasure_id": self.erasure_id, "dry_run": self.dry_run,
                "removed": {**self.removed, "outbox_lines": self.outbox_lines},
                "identifiers": self.identifiers, "klaviyo": self.klaviyo}


class Forgetter:
    """Erases one person at a time; built by the wiring."""

    def __init__(self, engine: Engine, store: QueueStore, hasher_of: Callable[[bool], Hasher],
                 sender: Sender | None, find_customers: CustomerFinder | None,
                 outbox: Path | None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.engine = engine
        self.store = store
        self.hasher_of = hasher_of  # True: create the key if there is none yet
        self.sender = sender
        self.find_customers = find_customers
        self.outbox = outbox
        self.sleep = sleep

    def forget(self, email: str | None = None, customer_id: str | None = None,
               dry_run: bool = False, asked_by: str | None = None) -> ForgetResult:
        if (email is None) == (customer_id is None):
            raise KlaviyoSyncError("forget: give exactly one of --email or --customer")
        person = self.resolve(email, customer_id)
        identifiers = {"emails": len(person.emails), "customer_ids": len(person.customer_ids)}
        if dry_run:
            with self.engine.connect() as conn:
                removed = count_local(conn, self.store, person)
            lines = erase_outbox(self.outbox, person, dry_run=True) if self.outbox else 0
            return ForgetResult(None, removed, lines,
                                "dry run: Klaviyo not asked (a real run asks it to delete "
                                "the profile)", True, identifiers)
        hasher = self.hasher_of(True)
        erasure_id, state = self._record(person, hasher, asked_by or
                                         ("email" if email is not None else "customer"))
        with erasing(self.engine) as conn:
            removed = erase_local(conn, self.store, person)
            previous = conn.execute(sa.select(erasures.c.removed)
                                    .where(erasures.c.id == erasure_id)).scalar() or {}
            total = {k: int(previous.get(k, 0)) + v for k, v in removed.items()}
            conn.execute(erasures.update().where(erasures.c.id == erasure_id).values(
                removed=total,
                state=state if state == ErasureState.DONE else ErasureState.ERASED.value))
        lines = erase_outbox(self.outbox, person) if self.outbox else 0
        log.info("person_erased_locally", erasure=erasure_id, **removed, outbox_lines=lines)
        answer = self._ask_klaviyo(erasure_id, person, state)
        return ForgetResult(erasure_id, total, lines, answer, False, identifiers)

    # --- steps ------------------------------------------------------------------------

    def resolve(self, email: str | None, customer_id: str | None) -> Person:
        """Every email and customer id that belongs to this person in our copies."""
        person = Person()
        person.add(email, customer_id)
        for _ in range(3):  # a link found may reveal another (email -> id -> 2nd email)
            before = (len(person.emails), len(person.customer_ids))
            if self.find_customers is not None:
                for customer in self.find_customers(set(person.emails),
                                                    set(person.customer_ids)):
                    person.add(customer.email, customer.id)
            with self.engine.connect() as conn:
                for found_email, found_id in self.store.person_identities(
                        conn, sorted(person.emails), sorted(person.customer_ids)):
                    person.add(found_email, found_id)
            if (len(person.emails), len(person.customer_ids)) == before:
                break
        return person

    def _record(self, person: Person, hasher: Hasher, asked_by: str) -> tuple[int, str]:
        """The erasure row (found by any of the person's hashes, or new), committed
        before anything is erased; one row per further identifier, so each one is a
        tombstone of its own."""
        emails = [hasher.email(e) for e in sorted(person.emails)]
        ids = [hasher.customer(c) for c in sorted(person.customer_ids)]
        now = utcnow()
        with self.engine.begin() as conn:
            existing = conn.execute(
                sa.select(erasures.c.id, erasures.c.state, erasures.c.email_hash,
                          erasures.c.customer_hash)
                .where(sa.or_(erasures.c.email_hash.in_([h for h in emails if h]),
                              erasures.c.customer_hash.in_([h for h in ids if h])))
                .order_by(erasures.c.id)).fetchall()
            known = {h for row in existing for h in (row[2], row[3]) if h}
            primary = existing[0] if existing else None
            fresh_emails = [h for h in emails if h and h not in known]
            fresh_ids = [h for h in ids if h and h not in known]
            if primary is None:
                erasure_id = conn.execute(erasures.insert().values(
                    requested_at=now, asked_by=asked_by,
                    email_hash=fresh_emails.pop(0) if fresh_emails else None,
                    customer_hash=fresh_ids.pop(0) if fresh_ids else None,
                    state=ErasureState.REQUESTED.value, skipped=0)
                    .returning(erasures.c.id)).scalar_one()
                state = ErasureState.REQUESTED.value
            else:
                erasure_id, state = primary[0], primary[1]
            while fresh_emails or fresh_ids:
                conn.execute(erasures.insert().values(
                    requested_at=now, asked_by=f"link:{erasure_id}",
                    email_hash=fresh_emails.pop(0) if fresh_emails else None,
                    customer_hash=fresh_ids.pop(0) if fresh_ids else None,
                    state=ErasureState.DONE.value, skipped=0))
        return erasure_id, state

    def _ask_klaviyo(self, erasure_id: int, person: Person, state: str) -> str:
        if state == ErasureState.DONE.value:
            return "Klaviyo was asked before: not asked again"
        if self.sender is None:
            return "no sender configured: Klaviyo not asked"
        sender = self.sender
        targets: list[tuple[str | None, str | None]] = [(e, None) for e in sorted(person.emails)]
        if not targets:
            targets = [(None, pid) for c in sorted(person.customer_ids)
                       for pid in self._with_retries(partial(sender.find_profile_ids, c))]
        if not targets:
            self._answered(erasure_id, None, "no profile in Klaviyo for this person")
            return "Klaviyo has no profile for this person"
        status: int | None = None
        for target_email, profile_id in targets:
            status = self._with_retries(partial(sender.request_profile_deletion,
                                                target_email, profile_id))
        self._answered(erasure_id, status, f"deletion job accepted ({len(targets)})")
        return f"Klaviyo accepted {len(targets)} deletion job(s) ({status})"

    def _with_retries(self, call: Callable[[], Any]) -> Any:
        delay = 1.0
        for attempt in range(1, DELETION_ATTEMPTS + 1):
            try:
                return call()
            except RetryableSendError as exc:
                if attempt == DELETION_ATTEMPTS:
                    raise SendError(f"Klaviyo did not take the deletion request after "
                                    f"{attempt} attempts: {exc}; run forget again") from exc
                log.warning("deletion_request_retry", attempt=attempt, error=str(exc)[:200])
                self.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _answered(self, erasure_id: int, status: int | None, detail: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(erasures.update().where(erasures.c.id == erasure_id).values(
                state=ErasureState.DONE.value, klaviyo_status=status, klaviyo_detail=detail,
                klaviyo_at=utcnow()))


@dataclass(frozen=True)
class ErasureRecord:
    """A row of `forget --list`: no personal data."""

    id: int
    requested_at: datetime
    asked_by: str
    state: str
    removed: dict[str, int]
    klaviyo_status: int | None
    klaviyo_detail: str | None
    klaviyo_at: datetime | None
    skipped: int
    lifted_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        from klaviyo_sync.clock import iso_utc_or_none

        return {"id": self.id, "requested_at": iso_utc_or_none(self.requested_at),
                "asked_by": self.asked_by, "state": self.state, "removed": self.removed,
                "klaviyo_status": self.klaviyo_status, "klaviyo_detail": self.klaviyo_detail,
                "klaviyo_at": iso_utc_or_none(self.klaviyo_at), "skipped": self.skipped,
                "lifted_at": iso_utc_or_none(self.lifted_at)}


def list_erasures(engine: Engine) -> list[ErasureRecord]:
    """The requests made, oldest first (rows that only link an identifier left out)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(erasures.c.id, erasures.c.requested_at, erasures.c.asked_by,
                      erasures.c.state, erasures.c.removed, erasures.c.klaviyo_status,
                      erasures.c.klaviyo_detail, erasures.c.klaviyo_at, erasures.c.skipped,
                      erasures.c.lifted_at)
            .where(sa.not_(erasures.c.asked_by.like("link:%")))
            .order_by(erasures.c.id)).fetchall()
    return [ErasureRecord(r[0], r[1], r[2], r[3], dict(r[4] or {}), r[5], r[6], r[7],
                          int(r[8] or 0), r[9]) for r in rows]
