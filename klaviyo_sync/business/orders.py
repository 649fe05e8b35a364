"""Orders of the business system, read incrementally (read-only) by their ``updated_at``.

A pass reads ``updated_at >= watermark - overlap`` in keyset pages ordered by
``(updated_at, id)``: with the index on those two columns every page is a range read, so a
pass costs what changed since the last one (plus the overlap), never a full scan. Items
of a page come in one ``IN`` query.

Timestamps are kept twice: *raw*, exactly as the driver returns them, for the keyset and
the watermark (SQLite compares timestamps as text, so a cursor re-rendered in another
format could skip or repeat rows), and converted from ``business.timezone`` to naive UTC
for the events.
"""

from __future__ import annotations

import enum
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.config import BusinessSettings, OrderSettings
from klaviyo_sync.exceptions import BusinessDataError

#: Order ids per items query (keeps under every backend's bound-parameter limit).
ITEMS_IN_CHUNK = 5000


class OrderState(enum.StrEnum):
    """What a business status means for Klaviyo."""

    PLACED = "placed"
    CANCELLED = "cancelled"
    FULFILLED = "fulfilled"
    REFUNDED = "refunded"


def status_map(settings: OrderSettings) -> dict[str, OrderState]:
    """Business status (case-insensitive) -> OrderState, from the ``[orders]`` settings."""
    mapping: dict[str, OrderState] = {}
    for state, names in ((OrderState.PLACED, settings.placed_statuses),
                         (OrderState.CANCELLED, settings.cancelled_statuses),
                         (OrderState.FULFILLED, settings.fulfilled_statuses),
                         (OrderState.REFUNDED, settings.refunded_statuses)):
        for name in names:
            mapping[name.strip().lower()] = state
    return mapping


@dataclass(frozen=True, slots=True)
class OrderItem:
    product_id: str | None
    sku: str | None
    name: str | None
    quantity: int
    price: float
    category: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> OrderItem:
        """From (order_id, product_id, sku, name, quantity, price, category)."""
        _oid, pid, sku, name, qty, price, category = row
        return cls(None if pid is None else str(pid), sku, name,
                   int(qty) if qty is not None else 1,
                   float(price) if price is not None else 0.0, category or None)

    def sort_key(self) -> tuple[str, str, str, int, float]:
        return (self.product_id or "", self.sku or "", self.name or "", self.quantity, self.price)


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the business database shows it now; times are naive UTC."""

    id: str
    customer_id: str | None
    status: str
    total: float | None
    currency: str | None
    created_at: datetime
    updated_at: datetime
    #: Lines in a stable order (``order:<id>:item:<n>`` numbers them), possibly empty.
    items: tuple[OrderItem, ...]
    raw_id: Any  # as the driver returned it: the keyset cursor
    raw_updated_at: Any


@dataclass(frozen=True)
class OrderCursor:
    """Where a page ended: the raw (updated_at, id) of its last row."""

    updated_at: Any
    id: Any


class OrderReader:
    """Reads pages of orders with their items from the business database."""

    def __init__(self, engine: Engine, settings: BusinessSettings, page_size: int) -> None:
        self.engine = engine
        self.settings = settings
        self.page_size = page_size
        self._zone = zoneinfo.ZoneInfo(settings.timezone)
        self._utc = settings.timezone in ("UTC", "Etc/UTC")
        c = settings.columns
        # Untyped columns: the driver's values pass through unprocessed (fast, and raw).
        orders = sa.table(settings.orders_table, *(sa.column(n) for n in (
            c.order_id, c.order_customer_id, c.order_status, c.order_total, c.order_currency,
            c.order_created_at, c.order_updated_at)))
        items = sa.table(settings.order_items_table, *(sa.column(n) for n in (
            c.item_order_id, c.item_product_id, c.item_sku, c.item_name, c.item_quantity,
            c.item_price, c.item_category)))
        o, i = orders.c, items.c
        self._id, self._updated = o[c.order_id], o[c.order_updated_at]
        self._orders = sa.select(
            o[c.order_id], o[c.order_customer_id], o[c.order_status], o[c.order_total],
            o[c.order_currency], o[c.order_created_at], o[c.order_updated_at],
        ).where(self._updated.is_not(None)).order_by(self._updated, self._id)
        self._item_order_id = i[c.item_order_id]
        self._items = sa.select(
            i[c.item_order_id], i[c.item_product_id], i[c.item_sku], i[c.item_name],
            i[c.item_quantity], i[c.item_price], i[c.item_category])
        self.queries = 0

    def read_page(self, after: OrderCursor | None, since: Any = None) -> list[Order]:
        """Up to page_size orders after ``after`` with updated_at >= ``since`` (raw values)."""
        stmt = self._orders.limit(self.page_size)
        if since is not None:
            stmt = stmt.where(self._updated >= since)
        if after is not None:
            # Spelled as >= plus OR (not a row-value comparison) so MySQL uses the index.
            stmt = stmt.where(self._updated >= after.updated_at,
                              sa.or_(self._updated > after.updated_at, self._id > after.id))
        try:
            with self.engine.connect() as conn:
                self.queries += 1
                rows = conn.execute(stmt).fetchall()
                lines = self._read_items(conn, [r[0] for r in rows])
        except sa.exc.SQLAlchemyError as exc:
            raise BusinessDataError(
                f"cannot read {self.settings.orders_table} from the business database: "
                f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc
        return [self._order(row, lines.get(row[0], ())) for row in rows]

    def _read_items(self, conn: sa.Connection, raw_ids: list[Any]) -> dict[Any, list[Any]]:
        found: dict[Any, list[Any]] = {}
        for start in range(0, len(raw_ids), ITEMS_IN_CHUNK):
            self.queries += 1
            chunk = raw_ids[start:start + ITEMS_IN_CHUNK]
            for row in conn.execute(self._items.where(self._item_order_id.in_(chunk))):
                found.setdefault(row[0], []).append(row)
        return found

    def _order(self, row: Sequence[Any], lines: Sequence[Any]) -> Order:
        raw_id, customer_id, status, total, currency, created, updated = row
        items = sorted((OrderItem.from_row(line) for line in lines), key=OrderItem.sort_key)
        updated_utc = self.to_utc(updated)
        return Order(
            id=str(raw_id), customer_id=None if customer_id is None else str(customer_id),
            status=str(status or "").strip(), total=None if total is None else float(total),
            currency=(currency or "").strip().upper() or None,
            created_at=self.to_utc(created) if created is not None else updated_utc,
            updated_at=updated_utc, items=tuple(items), raw_id=raw_id, raw_updated_at=updated,
        )

    def to_utc(self, raw: Any) -> datetime:
        """A timestamp as the driver returned it, as naive UTC."""
        moment = parse_raw_time(raw)
        if moment.tzinfo is not None:
            return moment.astimezone(UTC).replace(tzinfo=None)
        if self._utc:
            return moment
        return moment.replace(tzinfo=self._zone).astimezone(UTC).replace(tzinfo=None)


def parse_raw_time(raw: Any) -> datetime:
    """datetime from a driver value (SQLite gives text; other drivers datetimes)."""
    if isinstance(raw, datetime):
        return raw
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw.strip())
        except ValueError as exc:
            raise BusinessDataError(f"not a timestamp in the orders table: {raw!r}") from exc
    raise BusinessDataError(f"not a timestamp in the orders table: {raw!r}")


def shift_raw_time(raw: Any, seconds: float) -> Any:
    """``raw`` moved by ``seconds``, in the same representation (and text layout) as raw."""
    moved = parse_raw_time(raw) + timedelta(seconds=seconds)
    if not isinstance(raw, str):
        return moved
    sep = "T" if "T" in raw else " "
    text = moved.isoformat(sep=sep, timespec="microseconds" if "." in raw else "seconds")
    return text


def raw_time_to_text(raw: Any) -> str:
    """How a raw watermark is kept in the meta table."""
    return raw if isinstance(raw, str) else parse_raw_time(raw).isoformat()


def raw_time_from_text(text: str, as_text: bool) -> Any:
    """The inverse of :func:`raw_time_to_text` (text stays text for text-typed backends)."""
    return text if as_text else datetime.fromisoformat(text)
