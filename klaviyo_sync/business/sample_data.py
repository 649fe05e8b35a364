"""A generated business database with a known answer: for tests, the benchmark and the demo.

:func:`create_schema` creates the business schema the default settings describe (under
the table and column names the settings give) on any SQLAlchemy engine; :func:`generate`
fills it with a deterministic data set (same seed, same rows) and returns a
:class:`SampleSummary` that says what the right answers are: which customers are missed
signups, how many events an initial orders pass must enqueue. Rows go in with
executemany in chunks, so a million orders fit in a few hundred MB of nothing: nothing is
held beyond one chunk.
"""

from __future__ import annotations

import random
import zoneinfo
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.business.customers import Customer
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import BusinessSettings, Settings
from klaviyo_sync.queue.models import NewEvent

#: Rows per INSERT executemany.
CHUNK_ROWS = 20_000

STATUSES = (("Active", 60), ("Stopped", 20), ("Dead", 10), ("Paused", 10))
SCHEDULES = ("weekly", "fortnightly", "monthly")
BOXES = ("Classic", "Veggie", "Family", "Keto")
ORDER_STATUSES = (("placed", 40), ("completed", 40), ("cancelled", 10), ("refunded", 10))
CATEGORIES = ("Coffee", "Tea", "Snacks", "Pantry", "Kitchen")
FIRST_NAMES = ("Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo")
LAST_NAMES = ("Smith", "Jones", "Okafor", "Novak", "Silva", "Tanaka", "Berg", "Dubois")


@dataclass(frozen=True)
class SignupAttempt:
    """A `started.signup` log event the generated customer made (goes in the state DB)."""

    customer_id: str
    email: str
    occurred_at: datetime  # naive UTC
    first_name: str | None = None
    last_name: str | None = None


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`generate` wrote, and the answers a correct program must give."""

    #: The generated customers, as the customer reader would return them.
    customers: tuple[Customer, ...] = field(repr=False)
    orders: int
    items: int
    orders_by_status: dict[str, int]
    #: Ids of customers (or of attempters missing from customers) who are missed signups.
    expected_missed_ids: tuple[str, ...]
    signups: tuple[SignupAttempt, ...] = field(repr=False)
    #: Ids referenced by orders but absent from customers.
    missing_customer_ids: tuple[str, ...] = ()

    def expected_initial_events(self) -> dict[str, int]:
        """Events an initial orders pass enqueues, per metric (default status names)."""
        by = self.orders_by_status
        return {
            "Placed Order": self.orders,
            "Ordered Product": self.items,
            "Cancelled Order": by.get("cancelled", 0),
            "Fulfilled Order": by.get("completed", 0),
            "Refunded Order": by.get("refunded", 0),
        }


def tables(settings: BusinessSettings) -> tuple[sa.Table, sa.Table, sa.Table]:
    """The documented business tables under the configured names (customers, orders, items)."""
    c = settings.columns
    md = sa.MetaData()
    customers = sa.Table(
        settings.customers_table, md,
        sa.Column(c.customer_id, sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(c.customer_email, sa.String(320)),
        sa.Column(c.customer_first_name, sa.String(100)),
        sa.Column(c.customer_last_name, sa.String(100)),
        sa.Column(c.customer_status, sa.String(32)),
        sa.Column(c.customer_schedule, sa.String(32)),
        sa.Column(c.customer_box, sa.String(32)),
        sa.Column(c.customer_signup_date, sa.Date),
        sa.Column(c.customer_email_opt_in, sa.Boolean),
        sa.Column(c.customer_updated_at, sa.DateTime),
    )
    orders = sa.Table(
        settings.orders_table, md,
        sa.Column(c.order_id, sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(c.order_customer_id, sa.Integer),
        sa.Column(c.order_status, sa.String(32)),
        sa.Column(c.order_total, sa.Numeric(12, 2)),
        sa.Column(c.order_currency, sa.String(3)),
        sa.Column(c.order_created_at, sa.DateTime, nullable=False),
        sa.Column(c.order_updated_at, sa.DateTime, nullable=False),
        # The index the incremental read relies on: the orders pass never scans the
        # whole table (docs/architecture.md, "Data flow").
        sa.Index(f"ix_{settings.orders_table}_updated", c.order_updated_at, c.order_id),
        sa.Index(f"ix_{settings.orders_table}_customer", c.order_customer_id),
    )
    items = sa.Table(
        settings.order_items_table, md,
        sa.Column(c.item_order_id, sa.Integer, nullable=False),
        sa.Column(c.item_product_id, sa.Integer),
        sa.Column(c.item_sku, sa.String(64)),
        sa.Column(c.item_name, sa.String(200)),
        sa.Column(c.item_quantity, sa.Integer),
        sa.Column(c.item_price, sa.Numeric(12, 2)),
        sa.Column(c.item_category, sa.String(64)),
        sa.Index(f"ix_{settings.order_items_table}_order", c.item_order_id),
    )
    return customers, orders, items


def create_schema(engine: Engine, settings: BusinessSettings) -> None:
    """Create the documented customers/orders/order_items tables (if missing)."""
    customers, _orders, _items = tables(settings)
    assert customers.metadata is not None
    customers.metadata.create_all(engine)


def generate(engine: Engine, settings: BusinessSettings | Settings, customers: int = 1000,
             orders: int = 3000, seed: int = 1, now: datetime | None = None) -> SampleSummary:
    """Fill the (empty) schema with a deterministic data set and return its answers.

    Orders carry exactly 3 items on average (0 to 6 each, so some have none), about 2% of
    them belong to customer ids missing from customers, and every order status appears.
    About a third of customers made 1-3 `started.signup` attempts in the last 28 days.
    """
    business = settings.business if isinstance(settings, Settings) else settings
    rng = random.Random(seed)
    now = now or utcnow()
    zone = zoneinfo.ZoneInfo(business.timezone)
    local_now = now.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None, microsecond=0)
    t_customers, t_orders, t_items = tables(business)
    people: dict[int, Customer] = {}

    def customer_rows() -> Iterator[dict[str, Any]]:
        c = business.columns
        for cid in range(1, customers + 1):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            status = _weighted(rng, STATUSES)
            schedule = rng.choice(SCHEDULES) if rng.random() > 0.1 else None
            box = rng.choice(BOXES) if rng.random() > 0.1 else None
            customer = Customer(
                id=str(cid), email=f"customer{cid}@example.com", first_name=first,
                last_name=last, status=status, schedule=schedule, box=box,
                signup_date=date(2020, 1, 1) + timedelta(days=cid % 1500),
                email_opt_in=rng.random() > 0.2)
            people[cid] = customer
            yield {c.customer_id: cid, c.customer_email: customer.email,
                   c.customer_first_name: first, c.customer_last_name: last,
                   c.customer_status: status, c.customer_schedule: schedule,
                   c.customer_box: box, c.customer_signup_date: customer.signup_date,
                   c.customer_email_opt_in: customer.email_opt_in,
                   c.customer_updated_at: local_now - timedelta(days=cid % 300)}

    by_status: Counter[str] = Counter()
    counts = {"items": 0}
    missing: set[int] = set()

    def order_rows() -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        c = business.columns
        spread_s = 730 * 86400
        for oid in range(1, orders + 1):
            # Pairs of orders carry 3+d and 3-d items: exactly 3 per order on average.
            # (an odd last order, having no partner, gets exactly 3).
            if oid % 2:
                pair[0] = rng.randint(-3, 3) if oid != orders else 0
                n_items = 3 + pair[0]
            else:
                n_items = 3 - pair[0]
            status = _weighted(rng, ORDER_STATUSES)
            by_status[status] += 1
            if rng.random() < 0.02:
                cid = customers + 1 + rng.randrange(max(1, customers // 10))
                missing.add(cid)
            else:
                cid = rng.randint(1, max(1, customers))
            created = local_now - timedelta(seconds=rng.randrange(3600, spread_s))
            updated = created if status == "placed" else created + timedelta(
                seconds=rng.randrange(60, 7 * 86400))
            updated = min(updated, local_now)
            lines = []
            total = 0.0
            for _ in range(n_items):
                pid = rng.randint(1, 200)
                qty = rng.randint(1, 3)
                price = round(2 + (pid * 37 % 400) / 10, 2)
                total += price * qty
                lines.append({c.item_order_id: oid, c.item_product_id: pid,
                              c.item_sku: f"SKU-{pid:05d}", c.item_name: f"Product {pid}",
                              c.item_quantity: qty, c.item_price: price,
                              c.item_category: CATEGORIES[pid % len(CATEGORIES)]})
            counts["items"] += len(lines)
            yield ({c.order_id: oid, c.order_customer_id: cid, c.order_status: status,
                    c.order_total: round(total, 2),
                    c.order_currency: "EUR" if oid % 10 == 0 else "USD",
                    c.order_created_at: created, c.order_updated_at: updated}, lines)

    pair = [0]
    _insert_chunks(engine, t_customers, customer_rows())
    _insert_orders(engine, t_orders, t_items, order_rows())
    signups = _signup_attempts(rng, people, customers, now)
    active = settings.missed_signups.active_status if isinstance(settings, Settings) \
        else "Active"
    expected = sorted({s.customer_id for s in signups
                       if not _complete(people.get(int(s.customer_id)), active)}, key=int)
    return SampleSummary(
        customers=tuple(people.values()), orders=orders, items=counts["items"],
        orders_by_status=dict(by_status), expected_missed_ids=tuple(expected),
        signups=tuple(signups), missing_customer_ids=tuple(str(m) for m in sorted(missing)),
    )


def signup_events(summary: SampleSummary, metric: str = "started.signup",
                  backfill: bool = False) -> list[NewEvent]:
    """The summary's signup attempts as queue events, as the log tailer would enqueue them."""
    return [
        NewEvent(unique_id=f"sample:signup:{s.customer_id}:{n}", metric=metric, source="log",
                 occurred_at=s.occurred_at, properties={"box": "Classic"},
                 customer_id=s.customer_id, email=s.email,
                 profile={"first_name": s.first_name, "last_name": s.last_name},
                 backfill=backfill)
        for n, s in enumerate(summary.signups)
    ]


def _complete(customer: Customer | None, active_status: str) -> bool:
    """The missed-signup rule's "signed up": a box, a schedule and the active status."""
    return (customer is not None and bool(customer.box) and bool(customer.schedule)
            and customer.status == active_status)


def _signup_attempts(rng: random.Random, people: dict[int, Customer],
                     customers: int, now: datetime) -> list[SignupAttempt]:
    attempts = []
    base = now.replace(microsecond=0)
    for cid, person in people.items():
        if rng.random() < 0.33:
            for _ in range(rng.randint(1, 3)):
                at = base - timedelta(seconds=rng.randrange(3600, 28 * 86400))
                attempts.append(SignupAttempt(str(cid), f"customer{cid}@example.com", at,
                                              person.first_name, person.last_name))
    # A few people who started signing up but never became customers at all.
    for n in range(max(1, customers // 100)):
        cid = customers + 10_000 + n
        at = base - timedelta(seconds=rng.randrange(3600, 28 * 86400))
        attempts.append(SignupAttempt(str(cid), f"prospect{cid}@example.com", at, "New", "Person"))
    attempts.sort(key=lambda s: s.occurred_at)
    return attempts


def _weighted(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    pick = rng.randrange(sum(w for _, w in choices))
    for value, weight in choices:
        if pick < weight:
            return value
        pick -= weight
    raise AssertionError("unreachable")


def _insert_chunks(engine: Engine, table: sa.Table, rows: Iterator[dict[str, Any]]) -> None:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK_ROWS:
            with engine.begin() as conn:
                conn.execute(table.insert(), chunk)
            chunk = []
    if chunk:
        with engine.begin() as conn:
            conn.execute(table.insert(), chunk)


def _insert_orders(engine: Engine, orders: sa.Table, items: sa.Table,
                   rows: Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
    order_chunk: list[dict[str, Any]] = []
    item_chunk: list[dict[str, Any]] = []

    def flush() -> None:
        with engine.begin() as conn:
            conn.execute(orders.insert(), order_chunk)
            if item_chunk:
                conn.execute(items.insert(), item_chunk)
        order_chunk.clear()
        item_chunk.clear()

    for order, lines in rows:
        order_chunk.append(order)
        item_chunk.extend(lines)
        if len(order_chunk) >= CHUNK_ROWS // 4:
            flush()
    if order_chunk:
        flush()
