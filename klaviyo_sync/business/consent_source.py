"""Customers as the consent passes see them: opt-in, its time, phone; read in pages.

The SELECT starts from :func:`~klaviyo_sync.business.customers.customer_select` and adds
the consent columns. Changed customers are read like orders: keyset pages on
``(updated_at, id)`` with raw driver values for the cursor. The opt-in time comes from
``[business.columns] customer_email_opt_in_at``; a table without that column falls back
to the signup date (midnight UTC), then to ``updated_at``; so does an empty opt-in time.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from klaviyo_sync.business.customers import Customer, customer_select
from klaviyo_sync.business.orders import parse_raw_time
from klaviyo_sync.config import BusinessSettings, ConsentSettings
from klaviyo_sync.exceptions import BusinessDataError

log = structlog.get_logger(__name__)

_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_IN_CHUNK = 500


def e164_problem(phone: str | None) -> str | None:
    """Why ``phone`` is not an E.164 number (``+`` then 8 to 15 digits), or None."""
    if phone is None or not phone.strip():
        return "no phone number"
    text = phone.strip()
    if not text.startswith("+"):
        return "does not start with + and a country code"
    digits = text[1:]
    if not digits.isdigit():
        return "contains characters other than digits after the +"
    if digits.startswith("0"):
        return "a country code never starts with 0"
    if not _E164.match(text):
        return f"has {len(digits)} digits (E.164 allows 8 to 15)"
    return None


@dataclass(frozen=True)
class ConsentCustomer:
    """One customer's consent as the business shows it; times are naive UTC."""

    customer: Customer
    opt_in_at: datetime | None
    phone: str | None
    sms_opt_in: bool
    raw_updated_at: Any
    raw_id: Any

    @property
    def id(self) -> str:
        return self.customer.id

    @property
    def email(self) -> str | None:
        email = (self.customer.email or "").strip().lower()
        return email if "@" in email else None


@dataclass(frozen=True)
class CustomerCursor:
    updated_at: Any
    id: Any


class ConsentReader:
    """Reads customers with their consent columns from the business database (read-only)."""

    def __init__(self, engine: Engine, settings: BusinessSettings, consent: ConsentSettings,
                 page_size: int | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.consent = consent
        self.page_size = page_size or consent.page_size
        self._zone = zoneinfo.ZoneInfo(settings.timezone)
        table, select = customer_select(settings)
        self._table_name = settings.customers_table
        cols = settings.columns
        self._id = table.c[cols.customer_id]
        self._updated: sa.ColumnClause[Any] = sa.column(cols.customer_updated_at)
        self._base = select
        self._select: sa.Select[Any] | None = None  # built on first use: needs reflection
        self.fallback = False

    # --- reading ---------------------------------------------------------------------

    def read_changed(self, after: CustomerCursor | None, since: Any = None
                     ) -> list[ConsentCustomer]:
        """Up to page_size customers after ``after`` with updated_at >= ``since`` (raw)."""
        stmt = self._statement().where(self._updated.is_not(None)) \
            .order_by(self._updated, self._id).limit(self.page_size)
        if since is not None:
            stmt = stmt.where(self._updated >= since)
        if after is not None:
            stmt = stmt.where(self._updated >= after.updated_at,
                              sa.or_(self._updated > after.updated_at, self._id > after.id))
        return self._fetch(stmt)

    def read_all(self) -> Iterator[list[ConsentCustomer]]:
        """Every customer, in pages by id (the reconciliation)."""
        last: Any = None
        while True:
            stmt = self._statement().order_by(self._id).limit(self.page_size)
            if last is not None:
                stmt = stmt.where(self._id > last)
            page = self._fetch(stmt)
            if not page:
                return
            yield page
            last = page[-1].raw_id
            if len(page) < self.page_size:
                return

    def by_email(self, emails: Iterable[str]) -> dict[str, tuple[str, datetime | None]]:
        """(customer id, opt-in time or None when not opted in now) per lower-cased email,
        where the business has the email."""
        wanted = sorted({e.lower() for e in emails if e})
        email_col: sa.ColumnClause[Any] = sa.column(self.settings.columns.customer_email)
        found: dict[str, tuple[str, datetime | None]] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            stmt = self._statement().where(
                sa.func.lower(email_col).in_(wanted[start:start + _IN_CHUNK]))
            for c in self._fetch(stmt):
                if c.email:
                    found.setdefault(c.email, (c.id, c.opt_in_at if c.customer.email_opt_in
                                               else None))
        return found

    # --- the statement -------------------------------------------------------------------

    def _statement(self) -> sa.Select[Any]:
        if self._select is None:
            cols = self.settings.columns
            present = self._columns()
            extra: list[Any] = [self._updated.label("updated_at")]
            if cols.customer_email_opt_in_at.lower() in present:
                extra.append(sa.column(cols.customer_email_opt_in_at).label("opt_in_at"))
            else:
                self.fallback = True
                log.warning("consent_time_column_missing",
                            column=cols.customer_email_opt_in_at,
                            fallback="signup_date, else updated_at")
                extra.append(sa.null().label("opt_in_at"))
            if self.consent.sms_phone_column:
                extra.append(sa.column(self.consent.sms_phone_column).label("phone"))
                extra.append(sa.column(self.consent.sms_opt_in_column).label("sms_opt_in"))
            self._select = self._base.add_columns(*extra)
        return self._select

    def _columns(self) -> set[str]:
        try:
            with self.engine.connect() as conn:
                return {c["name"].lower()
                        for c in sa.inspect(conn).get_columns(self._table_name)}
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def _fetch(self, stmt: sa.Select[Any]) -> list[ConsentCustomer]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).fetchall()
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc
        return [self._record(row) for row in rows]

    def _error(self, exc: Exception) -> BusinessDataError:
        return BusinessDataError(
            f"cannot read {self._table_name} from the business database: "
            f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}")

    def _record(self, row: Any) -> ConsentCustomer:
        customer = Customer.from_values(*row[:9])
        m = row._mapping
        raw_updated = m["updated_at"]
        opt_in_at = self._utc(m["opt_in_at"]) if m["opt_in_at"] is not None else None
        if opt_in_at is None:  # no column, or no time in it: the documented fallback
            opt_in_at = (datetime.combine(customer.signup_date, time())
                         if isinstance(customer.signup_date, date)
                         else self._utc(raw_updated) if raw_updated is not None else None)
        phone = m.get("phone")
        sms = m.get("sms_opt_in")
        return ConsentCustomer(customer, opt_in_at, str(phone).strip() if phone else None,
                               _flag(sms), raw_updated, row[0])

    def _utc(self, raw: Any) -> datetime:
        moment = parse_raw_time(raw)
        if moment.tzinfo is not None:
            return moment.astimezone(UTC).replace(tzinfo=None)
        if self.settings.timezone in ("UTC", "Etc/UTC"):
            return moment
        return moment.replace(tzinfo=self._zone).astimezone(UTC).replace(tzinfo=None)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "t")
    return bool(value)
