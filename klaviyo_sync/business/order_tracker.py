"""The order tracker: turns what the orders table shows into queue events, each once.

Per order, ``order_sync`` remembers the last status seen and when each of its events was
enqueued. A page of orders is compared with it and the difference becomes events:

- first sight: Placed Order (+ one Ordered Product per line) at ``created_at``, then, if
  the order is already past ``placed``, its Cancelled/Fulfilled/Refunded Order at
  ``updated_at`` (never earlier than the placement, so an order's events keep their order);
- later: Cancelled/Fulfilled/Refunded Order the first time the order shows that state.

Each of an order's events is sent at most once (its unique id would make Klaviyo drop a
second one anyway). A status that flaps back (cancelled -> placed) sends nothing and is
logged as ``order_status_reverted``; if the order is then completed, Fulfilled Order goes
out, and a second cancellation is not sent again.

The events, the order_sync rows and the watermark of a page are committed in ONE
transaction: a crash re-reads at most the page in flight plus the overlap, and since
order_sync already holds what was committed, nothing is enqueued twice.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from klaviyo_sync.business.customers import Customer, CustomerDirectory
from klaviyo_sync.business.order_events import OrderEventBuilder, order_properties
from klaviyo_sync.business.orders import (
    Order,
    OrderCursor,
    OrderReader,
    OrderState,
    parse_raw_time,
    raw_time_from_text,
    raw_time_to_text,
    shift_raw_time,
    status_map,
)
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import Settings
from klaviyo_sync.queue.drivers import insert_ignoring_duplicates, write_transaction
from klaviyo_sync.queue.models import NewEvent
from klaviyo_sync.queue.store import QueueStore
from klaviyo_sync.state import meta
from klaviyo_sync.state.schema import order_sync

log = structlog.get_logger(__name__)

_SENT_COLUMN = {OrderState.PLACED: "placed_at", OrderState.CANCELLED: "cancelled_at",
                OrderState.FULFILLED: "fulfilled_at", OrderState.REFUNDED: "refunded_at"}
#: order_sync ids per SELECT (under SQLite's bound-parameter limit).
_KNOWN_CHUNK = 5000


class CustomerObserver(Protocol):
    """What the tracker needs of the suppressor."""

    def observe(self, customers: Any) -> int: ...


@dataclass(frozen=True)
class SyncRecord:
    """An order_sync row: what the tracker already did for one order."""

    order_id: str
    last_status: str
    sent: frozenset[OrderState]
    times: dict[str, datetime | None]

    @classmethod
    def from_row(cls, row: Any) -> SyncRecord:
        m = row._mapping
        times = {col: m[col] for col in _SENT_COLUMN.values()}
        sent = frozenset(s for s, col in _SENT_COLUMN.items() if times[col] is not None)
        return cls(order_id=m["order_id"], last_status=m["last_status"], sent=sent, times=times)


@dataclass(frozen=True)
class OrdersReport:
    """What one pass did."""

    pages: int = 0
    orders_read: int = 0
    orders_new: int = 0
    orders_changed: int = 0
    unknown_status: int = 0
    events_enqueued: int = 0
    by_metric: dict[str, int] = field(default_factory=dict)
    watermark: str | None = None
    interrupted: bool = False


def plan_transitions(state: OrderState, known: SyncRecord | None) -> list[OrderState]:
    """The events an order in ``state`` still needs, in the order they happened."""
    if known is None:
        return [OrderState.PLACED] if state is OrderState.PLACED else [OrderState.PLACED, state]
    if state is OrderState.PLACED or state in known.sent:
        return []
    return [state]


class OrderTracker:
    """One incremental orders pass at a time (:meth:`run_once`)."""

    def __init__(self, settings: Settings, state_engine: Engine, reader: OrderReader,
                 customers: CustomerDirectory, observer: CustomerObserver | None = None,
                 text_times: bool = False) -> None:
        self.settings = settings
        self.state_engine = state_engine
        self.reader = reader
        self.customers = customers
        self.observer = observer
        self.queue = QueueStore(state_engine)
        self._states = status_map(settings.orders)
        self._text_times = text_times  # the business driver returns timestamps as text

    def run_once(self, stop: threading.Event | None = None, now: datetime | None = None
                 ) -> OrdersReport:
        """Read what changed since the last pass (minus the overlap) and enqueue its events."""
        now = now or utcnow()
        tally: Counter[str] = Counter()
        unknown: Counter[str] = Counter()
        watermark = self._load_watermark()
        since = (shift_raw_time(watermark, -self.settings.orders.overlap_s)
                 if watermark is not None else None)
        builder = OrderEventBuilder(
            self.settings.klaviyo.default_currency,
            now - timedelta(hours=self.settings.log.backfill_after_hours))
        cursor: OrderCursor | None = None
        interrupted = False
        while True:
            if stop is not None and stop.is_set():
                interrupted = True
                break
            page = self.reader.read_page(cursor, since)
            if not page:
                break
            watermark = self._process_page(page, builder, watermark, now, tally, unknown)
            tally["pages"] += 1
            tally["orders_read"] += len(page)
            cursor = OrderCursor(page[-1].raw_updated_at, page[-1].raw_id)
            if len(page) < self.reader.page_size:
                break
        meta.put(self.state_engine, meta.LAST_ORDERS_PASS_AT, now.isoformat(), now)
        for status, count in unknown.items():
            log.warning("order_status_unknown", status=status, orders=count,
                        hint="add it to one of the [orders] *_statuses settings")
        report = OrdersReport(
            pages=tally.pop("pages", 0), orders_read=tally.pop("orders_read", 0),
            orders_new=tally.pop("orders_new", 0), orders_changed=tally.pop("orders_changed", 0),
            unknown_status=sum(unknown.values()), events_enqueued=tally.pop("enqueued", 0),
            by_metric=dict(tally),
            watermark=raw_time_to_text(watermark) if watermark is not None else None,
            interrupted=interrupted,
        )
        # A pass that only re-read its overlap window (every minute under the daemon) is
        # not worth a journal line.
        emit = log.info if report.events_enqueued or report.unknown_status else log.debug
        emit("orders_pass_done", pages=report.pages, orders=report.orders_read,
             new=report.orders_new, changed=report.orders_changed,
             enqueued=report.events_enqueued, unknown_status=report.unknown_status)
        return report

    def reread_all(self) -> None:
        """Forget the watermark: the next pass reads every order again.

        For an operator who fixed a status mapping: orders skipped for an unknown status
        are picked up, while order_sync keeps every event that already went from going
        again.
        """
        meta.delete(self.state_engine, meta.ORDERS_WATERMARK)

    # --- one page -----------------------------------------------------------------

    def _process_page(self, page: Sequence[Order], builder: OrderEventBuilder, watermark: Any,
                      now: datetime, tally: Counter[str], unknown: Counter[str]) -> Any:
        known = self._known([o.id for o in page])
        plans: list[tuple[Order, OrderState, list[OrderState], SyncRecord | None]] = []
        for order in page:
            state = self._states.get(order.status.lower())
            if state is None:
                unknown[order.status] += 1
                continue
            record = known.get(order.id)
            emit = plan_transitions(state, record)
            if record is not None and not emit:
                if record.last_status == order.status:
                    continue  # seen before as it is now: the overlap, or an unrelated edit
                if state is OrderState.PLACED:
                    log.info("order_status_reverted", order_id=order.id,
                             previous=record.last_status, status=order.status)
            plans.append((order, state, emit, record))
        who = self._lookup_customers(plans)
        events: list[NewEvent] = []
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for order, _state, emit, record in plans:
            customer = who.get(order.customer_id) if order.customer_id else None
            times = self._build(order, emit, customer.email if customer else None, builder,
                                events)
            row = self._sync_row(order, record, times, now)
            if record is None:
                inserts.append(row)
                tally["orders_new"] += 1
            else:
                row["b_order_id"] = row.pop("order_id")
                updates.append(row)
                tally["orders_changed"] += 1
        watermark = self._later(watermark, page[-1].raw_updated_at)
        with self._write() as conn:
            tally["enqueued"] += self.queue.enqueue(conn, events, now)
            insert_ignoring_duplicates(conn, order_sync, inserts, "order_id")
            if updates:
                conn.execute(self._update_stmt(), updates)
            meta.put(conn, meta.ORDERS_WATERMARK, raw_time_to_text(watermark), now)
        for event in events:
            tally[event.metric] += 1
        if self.observer is not None and who:
            self.observer.observe([who[o.customer_id] for o, _s, emit, _r in plans
                                   if emit and o.customer_id in who])
        return watermark

    @staticmethod
    def _build(order: Order, emit: list[OrderState], email: str | None,
               builder: OrderEventBuilder, out: list[NewEvent]) -> dict[OrderState, datetime]:
        times: dict[OrderState, datetime] = {}
        if not emit:
            return times
        properties = order_properties(order)
        for state in emit:
            # A transition is never dated before the placement: the events of one order
            # keep their order in Klaviyo even if the business clock disagrees.
            at = (order.created_at if state is OrderState.PLACED
                  else max(order.updated_at, order.created_at))
            out.append(builder.order_event(order, state, at, properties, email))
            if state is OrderState.PLACED:
                out.extend(builder.ordered_products(order, email))
            times[state] = at
        return times

    @staticmethod
    def _sync_row(order: Order, record: SyncRecord | None, times: dict[OrderState, datetime],
                  now: datetime) -> dict[str, Any]:
        row: dict[str, Any] = {"order_id": order.id, "customer_id": order.customer_id,
                               "last_status": order.status[:64],
                               "source_updated_at": order.updated_at, "updated_at": now}
        for state, column in _SENT_COLUMN.items():
            row[column] = times.get(state) or (record.times[column] if record else None)
        return row

    # --- state database ---------------------------------------------------------------

    def _known(self, order_ids: list[str]) -> dict[str, SyncRecord]:
        found: dict[str, SyncRecord] = {}
        with self.state_engine.connect() as conn:
            for start in range(0, len(order_ids), _KNOWN_CHUNK):
                chunk = order_ids[start:start + _KNOWN_CHUNK]
                for row in conn.execute(sa.select(order_sync)
                                        .where(order_sync.c.order_id.in_(chunk))):
                    record = SyncRecord.from_row(row)
                    found[record.order_id] = record
        return found

    def _lookup_customers(self, plans: Sequence[tuple[Order, OrderState, list[OrderState],
                                                       SyncRecord | None]]
                          ) -> dict[str, Customer]:
        ids = {o.customer_id for o, _s, emit, _r in plans if emit and o.customer_id}
        return self.customers.lookup(ids) if ids else {}

    @staticmethod
    def _update_stmt() -> sa.Update:
        # executemany: SET takes every column named in the rows, WHERE the renamed key.
        return order_sync.update().where(order_sync.c.order_id == sa.bindparam("b_order_id"))

    def _write(self) -> Any:
        # The queue's write transaction: on SQLite it takes the write lock before reading.
        return write_transaction(self.state_engine)

    def _load_watermark(self) -> Any:
        text = meta.get(self.state_engine, meta.ORDERS_WATERMARK)
        return raw_time_from_text(text, self._text_times) if text else None

    @staticmethod
    def _later(watermark: Any, candidate: Any) -> Any:
        # The overlap re-reads older rows: the watermark never moves back.
        if watermark is None or parse_raw_time(candidate) > parse_raw_time(watermark):
            return candidate
        return watermark
