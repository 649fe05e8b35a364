"""Customers of the business system: the record, the reader, and an in-memory fake."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.config import BusinessSettings
from klaviyo_sync.exceptions import BusinessDataError


@dataclass(frozen=True)
class Customer:
    """A customer as the business database shows them now."""

    id: str
    email: str | None
    first_name: str | None = None
    last_name: str | None = None
    status: str | None = None
    schedule: str | None = None
    box: str | None = None
    signup_date: date | None = None
    email_opt_in: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | sa.RowMapping) -> Customer:
        return cls.from_values(
            row["id"], row.get("email"), row.get("first_name"), row.get("last_name"),
            row.get("status"), row.get("schedule"), row.get("box"), row.get("signup_date"),
            row.get("email_opt_in"))

    @classmethod
    def from_values(cls, id: Any, email: Any, first_name: Any, last_name: Any, status: Any,
                    schedule: Any, box: Any, signup_date: Any, email_opt_in: Any) -> Customer:
        """From the reader's columns in order (positional rows: a mapping's get() per
        column was most of the look-up's CPU on a batch of 1,000 customers)."""
        if signup_date is not None and (isinstance(signup_date, datetime)
                                        or not isinstance(signup_date, date)):
            signup_date = date_of(signup_date)
        return cls(str(id), email or None, first_name, last_name, status, text_or_none(schedule),
                   text_or_none(box), signup_date or None,
                   email_opt_in if email_opt_in.__class__ is bool else _flag(email_opt_in))


def date_of(value: Any) -> date | None:
    """A sign-up date as the database gave it (a date, a datetime, or text: SQLite)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str) and value:
        return date.fromisoformat(value[:10])
    return value or None


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "t")
    return bool(value)


def text_or_none(value: Any) -> str | None:
    """A text column's value, None for NULL or empty."""
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True, slots=True)
class CustomerRow:
    """A customer with what the profiles pass needs besides: the extra columns' values and
    the raw (updated_at, id) keyset position."""

    customer: Customer
    extras: tuple[Any, ...]
    raw_updated_at: Any
    raw_id: Any

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> CustomerRow:
        return cls(Customer.from_values(*row[:UPDATED_AT]), tuple(row[UPDATED_AT + 1:]),
                   row[UPDATED_AT], row[0])


class CustomerDirectory(Protocol):
    """Looks customers up by business id, many at a time."""

    def lookup(self, ids: Iterable[str]) -> dict[str, Customer]: ...


class InMemoryCustomers:
    """A CustomerDirectory over a dict: for tests and the demo."""

    def __init__(self, customers: Iterable[Customer] = ()) -> None:
        self.customers = {c.id: c for c in customers}
        self.queries = 0
        self._id_kind: str | None = None  # "int" | "text" | "cast", see _id_matcher

    def lookup(self, ids: Iterable[str]) -> dict[str, Customer]:
        self.queries += 1
        return {i: self.customers[i] for i in set(ids) if i in self.customers}


# Customer's fields in the order Customer.from_values takes them.
CUSTOMER_FIELDS = ("id", "email", "first_name", "last_name", "status", "schedule", "box",
                   "signup_date", "email_opt_in")
#: Where updated_at sits in the profiles pass's raw rows (after CUSTOMER_FIELDS).
UPDATED_AT = len(CUSTOMER_FIELDS)


def customer_select(settings: BusinessSettings, more_columns: Sequence[str] = ()
                    ) -> tuple[sa.TableClause, sa.Select[Any]]:
    """The customers table and a SELECT of its [business.columns], labelled and ordered
    as :data:`CUSTOMER_FIELDS`; callers add their own WHERE. ``more_columns`` are declared
    on the table too, for a caller that selects them (updated_at, extra properties)."""
    cols = settings.columns
    names = (cols.customer_id, cols.customer_email, cols.customer_first_name,
             cols.customer_last_name, cols.customer_status, cols.customer_schedule,
             cols.customer_box, cols.customer_signup_date, cols.customer_email_opt_in)
    table = sa.table(settings.customers_table,
                     *(sa.column(name) for name in dict.fromkeys((*names, *more_columns))))
    select = sa.select(*(table.c[name].label(field)
                         for name, field in zip(names, CUSTOMER_FIELDS, strict=True)))
    return table, select


class SqlCustomerReader:
    """Reads customers from the business database: one query per batch of ids.

    ``extra_columns`` are selected after the standard ones (the profiles pass sends them
    as properties); :meth:`read_changed_raw` pages through customers by ``updated_at``.
    """

    def __init__(self, engine: Engine, settings: BusinessSettings,
                 extra_columns: Sequence[str] = ()) -> None:
        self.engine = engine
        self.settings = settings
        cols = settings.columns
        self.extra_columns = tuple(extra_columns)
        table, self._select = customer_select(
            settings, (cols.customer_updated_at, *self.extra_columns))
        self._id = table.c[cols.customer_id]
        self._updated = table.c[cols.customer_updated_at]
        # The profiles pass's rows: the standard columns, updated_at, then the extras.
        self._full = self._select.add_columns(
            self._updated, *(table.c[name] for name in self.extra_columns))
        self.queries = 0
        self._id_kind: str | None = None  # "int" | "text" | "cast", see _id_matcher

    def read_changed_raw(self, after: tuple[Any, Any] | None, since: Any, limit: int
                         ) -> Sequence[Sequence[Any]]:
        """Up to ``limit`` customers after the raw (updated_at, id) ``after``, with
        updated_at >= ``since`` (raw values; None: from the start), in that order, as the
        database gives them: :data:`CUSTOMER_FIELDS`, updated_at, then the extra columns.
        The profiles pass builds profiles straight from these: making a Customer of each
        row cost more than reading it."""
        stmt = (self._full.where(self._updated.is_not(None))
                .order_by(self._updated, self._id).limit(limit))
        if since is not None:
            stmt = stmt.where(self._updated >= since)
        if after is not None:
            # >= plus OR rather than a row-value comparison, so MySQL uses the index.
            stmt = stmt.where(self._updated >= after[0],
                              sa.or_(self._updated > after[0], self._id > after[1]))
        try:
            with self.engine.connect() as conn:
                self.queries += 1
                result = conn.execute(stmt)
                # The driver's own rows: the columns carry no SQL type, so SQLAlchemy's
                # Row objects would only wrap the same values (a sixth of the read).
                rows: Sequence[Sequence[Any]] = result.cursor.fetchall()
                result.close()
                return rows
        except (sa.exc.SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            # (the driver's fetch raises the driver's own errors)
            raise self._error(exc) from exc

    def read_ids(self, ids: Iterable[str]) -> list[CustomerRow]:
        """The customers with these ids, with their extra columns and keyset position."""
        wanted = sorted({str(i) for i in ids if i})
        found: list[CustomerRow] = []
        try:
            with self.engine.connect() as conn:
                match = self._id_matcher(conn, self._full)
                for start in range(0, len(wanted), self.settings.lookup_batch_size):
                    self.queries += 1
                    chunk = wanted[start:start + self.settings.lookup_batch_size]
                    found += [CustomerRow.from_row(r)
                              for r in conn.execute(*match(chunk)).fetchall()]
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc
        return found

    def _error(self, exc: Exception) -> BusinessDataError:
        return BusinessDataError(
            f"cannot read {self.settings.customers_table} from the business database: "
            f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}")

    def lookup(self, ids: Iterable[str]) -> dict[str, Customer]:
        wanted = sorted({str(i) for i in ids if i})
        found: dict[str, Customer] = {}
        size = self.settings.lookup_batch_size
        try:
            with self.engine.connect() as conn:
                match = self._id_matcher(conn)
                for start in range(0, len(wanted), size):
                    chunk = wanted[start:start + size]
                    self.queries += 1
                    # fetchall(): iterating a result fetches one row per call.
                    for row in conn.execute(*match(chunk)).fetchall():
                        customer = Customer.from_values(*row)
                        found[customer.id] = customer
        except sa.exc.SQLAlchemyError as exc:
            raise BusinessDataError(
                f"cannot read {self.settings.customers_table} from the business database: "
                f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}"
            ) from exc
        return found

    def by_email(self, emails: Iterable[str]) -> list[Customer]:
        """Customers whose email is one of ``emails`` (compared lower-cased)."""
        wanted = sorted({e.strip().lower() for e in emails if e and e.strip()})
        if not wanted:
            return []
        table, select = customer_select(self.settings)
        column = table.c[self.settings.columns.customer_email]
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select.where(sa.func.lower(column).in_(wanted))).fetchall()
        except sa.exc.SQLAlchemyError as exc:
            raise BusinessDataError(
                f"cannot read {self.settings.customers_table} from the business database: "
                f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}"
            ) from exc
        return [Customer.from_values(*row) for row in rows]

    def _id_matcher(self, conn: sa.Connection, select: sa.Select[Any] | None = None
                    ) -> Callable[[list[str]], tuple[Any, dict[str, Any]]]:
        """How string ids are compared with the id column, decided once from its type.

        The string ids of log lines must meet an INTEGER id column on every backend
        (PostgreSQL refuses integer = varchar). Comparing in the column's own type keeps
        its primary-key index usable; CAST(id AS text) IN (...) would scan the whole
        table on every look-up (53 ms per 500 ids on 100,000 customers in SQLite).
        """
        if self._id_kind is None:
            try:
                columns = sa.inspect(conn).get_columns(self.settings.customers_table)
                kind = next((c["type"] for c in columns
                             if c["name"].lower() == self.settings.columns.customer_id.lower()),
                            None)
            except (sa.exc.SQLAlchemyError, NotImplementedError):
                kind = None  # not reflectable: the cast below works everywhere
            self._id_kind = ("int" if isinstance(kind, sa.Integer)
                             else "text" if isinstance(kind, sa.String) else "cast")
        # One statement per reader, the ids an expanding parameter: in_(list) would make
        # and coerce a bound parameter per id on every look-up.
        ids: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
        base = self._select if select is None else select
        if self._id_kind == "int":
            by_int = base.where(self._id.in_(ids))
            return lambda chunk: (by_int, {"ids": [int(i) for i in chunk if i.isdigit()]})
        if self._id_kind == "text":
            by_text = base.where(self._id.in_(ids))
            return lambda chunk: (by_text, {"ids": chunk})
        by_cast = base.where(sa.cast(self._id, sa.String).in_(ids))
        return lambda chunk: (by_cast, {"ids": chunk})
