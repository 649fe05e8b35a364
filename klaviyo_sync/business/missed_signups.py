"""The missed-signup ruleset: who started signing up but, now, is not a signed-up customer.

A person is a missed signup when they have a ``started.signup`` event (settings:
``missed_signups.signup_metric``) in the window and, in the business database *now*,
lack a box, a schedule or the active status (or are not in it at all).

Where the attempts come from: the queue's own ``events`` table in the state database,
grouped per customer in one query on the (metric, occurred_at) index. Sent events are
pruned after ``sender.sent_retention`` (30 days by default), so the window reaches back
at most that far for delivered attempts; :func:`history_starts` says from when the answer
is complete, and the CLI prints it. A longer memory is one setting away
(``sender.sent_retention = "400d"``); a separate attempts table would have to be filled
by the log tailer too, for a question the events table already answers.
With ``klaviyo_events`` the front end's Started Checkout events (read from Klaviyo) count
as attempts too; they are matched to customers by Klaviyo's external_id (the business id
this program sets) or by email.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.business.checkout_events import CheckoutAttempt
from klaviyo_sync.business.customers import Customer, SqlCustomerReader, customer_select
from klaviyo_sync.clock import iso_utc, utcnow
from klaviyo_sync.config import BusinessSettings, Settings, parse_duration_s
from klaviyo_sync.exceptions import BusinessDataError
from klaviyo_sync.queue.store import QueueStore

COLUMNS = ("customer_id", "email", "name", "first_attempt_at", "last_attempt_at", "attempts",
           "status", "schedule", "box", "days_since_last_attempt", "sources")
FORMATS = ("table", "csv", "json")


@dataclass(frozen=True)
class MissedSignup:
    """One person who started signing up and is not, now, a signed-up customer."""

    customer_id: str | None
    email: str | None
    name: str | None
    first_attempt_at: datetime  # naive UTC
    last_attempt_at: datetime
    attempts: int
    status: str | None
    schedule: str | None
    box: str | None
    days_since_last_attempt: int
    sources: tuple[str, ...] = ("log",)  # "log" and/or "klaviyo"

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in COLUMNS}
        data["first_attempt_at"] = iso_utc(self.first_attempt_at)
        data["last_attempt_at"] = iso_utc(self.last_attempt_at)
        data["sources"] = list(self.sources)
        return data


@dataclass
class _Attempts:
    customer_id: str | None
    email: str | None
    first: datetime
    last: datetime
    count: int
    sources: set[str] = field(default_factory=set)

    def add(self, first: datetime, last: datetime, count: int, source: str,
            email: str | None) -> None:
        self.first, self.last = min(self.first, first), max(self.last, last)
        self.count += count
        self.sources.add(source)
        self.email = self.email or email


@dataclass(frozen=True)
class SignupOutcome:
    """Everyone with an attempt in the window, split by the rule."""

    missed: list[MissedSignup]
    #: Attempters who are signed-up customers now (MissedSignup = false on their profile).
    completed: list[Customer]
    #: False when there was no state database to read the log's attempts from.
    log_read: bool = True


def history_starts(settings: Settings, now: datetime | None = None) -> datetime:
    """From when the state database still holds every delivered signup attempt."""
    return (now or utcnow()) - timedelta(seconds=parse_duration_s(settings.sender.sent_retention))


def window(since: date | datetime | None, until: date | datetime | None
           ) -> tuple[datetime | None, datetime | None]:
    """[start, end) in naive UTC: a date ``until`` includes that whole day."""
    start = datetime.combine(since, time()) if type(since) is date else since
    end = (datetime.combine(until, time()) + timedelta(days=1) if type(until) is date
           else until)
    return start, end  # type: ignore[return-value]


def evaluate_signups(state_engine: Engine | None, business_engine: Engine, settings: Settings,
                     since: date | datetime | None = None, until: date | datetime | None = None,
                     klaviyo_events: Iterable[CheckoutAttempt] = (),
                     now: datetime | None = None) -> SignupOutcome:
    """Apply the ruleset to every attempt in the window (see :func:`find_missed_signups`).

    ``state_engine`` None: no state database exists yet, so the log has no attempts
    recorded; only ``klaviyo_events`` count."""
    now = now or utcnow()
    start, end = window(since, until)
    people = _log_attempts(state_engine, settings.missed_signups.signup_metric, start, end)
    reader = SqlCustomerReader(business_engine, settings.business)
    checkouts = [c for c in klaviyo_events if (start is None or c.occurred_at >= start)
                 and (end is None or c.occurred_at < end)]
    by_email = _customers_by_email(business_engine, settings.business,
                                   {c.email for c in checkouts if c.email and not c.external_id})
    for checkout in checkouts:
        owner = by_email.get((checkout.email or "").lower())
        cid = checkout.external_id or (owner.id if owner else None)
        key = cid or f"email:{(checkout.email or '').lower()}"
        if key == "email:":
            continue  # an anonymous checkout: nobody to report
        _merge(people, key, cid, checkout.email, checkout.occurred_at, checkout.occurred_at, 1,
               "klaviyo")
    found = reader.lookup(p.customer_id for p in people.values() if p.customer_id)
    names = _logged_names(state_engine, settings.missed_signups.signup_metric,
                          [p.customer_id for p in people.values()
                           if p.customer_id and p.customer_id not in found])
    active = settings.missed_signups.active_status
    missed, completed = [], []
    for person in people.values():
        customer = found.get(person.customer_id or "")
        if customer is not None and customer.box and customer.schedule \
                and customer.status == active:
            completed.append(customer)
            continue
        missed.append(_row(person, customer, names.get(person.customer_id or ""), now))
    missed.sort(key=lambda m: (m.last_attempt_at, m.customer_id or "", m.email or ""),
                reverse=True)
    return SignupOutcome(missed=missed, completed=completed, log_read=state_engine is not None)


def find_missed_signups(state_engine: Engine, business_engine: Engine, settings: Settings,
                        since: date | datetime | None = None,
                        until: date | datetime | None = None,
                        klaviyo_events: Iterable[CheckoutAttempt] = (),
                        now: datetime | None = None) -> list[MissedSignup]:
    """Missed signups with an attempt in [since, until], newest attempt first.

    Usable from a notebook: ``find_missed_signups(open_state(url), open_business(url),
    config.load())``. Dates are whole UTC days; datetimes are naive UTC, ``until``
    exclusive.
    """
    return evaluate_signups(state_engine, business_engine, settings, since, until,
                            klaviyo_events, now).missed


def render(rows: Iterable[MissedSignup], fmt: str) -> str:
    """The rows as an aligned table, CSV (with a header) or a JSON array."""
    rows = list(rows)
    if fmt == "json":
        return json.dumps([r.to_json() for r in rows], indent=2) + "\n"
    cells = [[_cell(r.to_json()[c]) for c in COLUMNS] for r in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(cells)
        return out.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
    table = [[c.removesuffix("_at").replace("_", " ") for c in COLUMNS]]
    table += [[_short_time(v) if COLUMNS[i].endswith("_at") else v for i, v in enumerate(row)]
              for row in cells]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines.append(f"{len(rows)} missed signup(s)")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "+".join(value)
    return str(value)


def _short_time(iso: str) -> str:
    return iso[:16].replace("T", " ") if iso else iso


def _merge(people: dict[str, _Attempts], key: str, customer_id: str | None, email: str | None,
           first: datetime, last: datetime, count: int, source: str) -> None:
    if key in people:
        people[key].add(first, last, count, source, email)
    else:
        people[key] = _Attempts(customer_id, email, first, last, count, {source})


def _log_attempts(engine: Engine | None, metric: str, start: datetime | None,
                  end: datetime | None) -> dict[str, _Attempts]:
    people: dict[str, _Attempts] = {}
    if engine is None:
        return people
    for found in QueueStore(engine).signup_attempts(metric, start, end):
        key = found.customer_id or f"email:{(found.email or '').lower()}"
        if key != "email:":
            _merge(people, key, found.customer_id, found.email, found.first_at,
                   found.last_at, found.count, "log")
    return people


def _logged_names(engine: Engine | None, metric: str, customer_ids: list[str]
                  ) -> dict[str, tuple[str | None, str | None]]:
    """First/last names the log lines carried, for attempters the business DB lacks."""
    names: dict[str, tuple[str | None, str | None]] = {}
    if engine is None:
        return names
    for customer_id, profile in QueueStore(engine).logged_profiles(metric, customer_ids):
        if profile and (profile.get("first_name") or profile.get("last_name")):
            names[customer_id] = (profile.get("first_name"), profile.get("last_name"))
    return names


def _customers_by_email(engine: Engine, settings: BusinessSettings, emails: set[str]
                        ) -> dict[str, Customer]:
    if not emails:
        return {}
    table, select = customer_select(settings)
    email = table.c[settings.columns.customer_email]
    wanted = sorted(e.lower() for e in emails)
    found: dict[str, Customer] = {}
    try:
        with engine.connect() as conn:
            for start in range(0, len(wanted), settings.lookup_batch_size):
                chunk = wanted[start:start + settings.lookup_batch_size]
                for row in conn.execute(select.where(
                        sa.func.lower(email).in_(chunk))).mappings():
                    customer = Customer.from_row(row)
                    found.setdefault((customer.email or "").lower(), customer)
    except sa.exc.SQLAlchemyError as exc:
        raise BusinessDataError(
            f"cannot read {settings.customers_table} by email: "
            f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc
    return found


def _row(person: _Attempts, customer: Customer | None,
         logged: tuple[str | None, str | None] | None, now: datetime) -> MissedSignup:
    first, last = ((customer.first_name, customer.last_name) if customer is not None
                   else logged or (None, None))
    name = " ".join(p for p in (first, last) if p) or None
    return MissedSignup(
        customer_id=person.customer_id, email=(customer.email if customer else None)
        or person.email, name=name, first_attempt_at=person.first,
        last_attempt_at=person.last, attempts=person.count,
        status=customer.status if customer else None,
        schedule=customer.schedule if customer else None,
        box=customer.box if customer else None,
        days_since_last_attempt=(now.date() - person.last.date()).days,
        sources=tuple(sorted(person.sources)),
    )


class ProfileWriter(Protocol):
    """What the flags need of a sender (senders/base.py's Sender has it)."""

    def import_profile(self, profile: dict[str, Any]) -> None: ...


def write_profile_flags(sender: ProfileWriter, outcome: SignupOutcome, property_name: str
                        ) -> int:
    """Set ``property_name`` true on missed signups' profiles and false on the others'.

    One profile-import request each (paced by the sender); returns profiles written.
    Attempters known only by a customer id Klaviyo has no email for still get the flag
    through external_id.
    """
    written = 0
    people: list[tuple[str | None, str | None, bool]] = [
        (m.email, m.customer_id, True) for m in outcome.missed]
    people += [(c.email, c.id, False) for c in outcome.completed]
    for email, customer_id, flag in people:
        profile: dict[str, Any] = {}
        if email:
            profile["email"] = email
        if customer_id:
            profile["external_id"] = customer_id
        if not profile:
            continue
        profile["properties"] = {property_name: flag}
        sender.import_profile(profile)
        written += 1
    return written
