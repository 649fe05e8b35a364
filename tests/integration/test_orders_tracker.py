"""The order tracker: every transition, against SQLite and PostgreSQL state databases."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from klaviyo_sync.app import App
from klaviyo_sync.business.order_tracker import OrderTracker
from klaviyo_sync.config import BusinessSettings, OrderSettings, Settings
from klaviyo_sync.queue import QueuedEvent, QueueStore
from klaviyo_sync.state.schema import order_sync
from tests.integration.shop import Shop

T0 = datetime(2026, 3, 1, 12, 0, 0)
NOW = T0 + timedelta(hours=1)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = Shop(f"sqlite:///{tmp_path / 'business.db'}")
    s.add_customer(1)
    yield s
    s.close()


def tracker_for(shop: Shop, engine: sa.Engine, settings: Settings | None = None
                ) -> OrderTracker:
    tracker = App(settings or shop.settings_with(), state_engine=engine).order_tracker
    assert tracker is not None
    return tracker


def queued(engine: sa.Engine) -> list[QueuedEvent]:
    return QueueStore(engine).list(limit=10_000)


def metrics(engine: sa.Engine) -> list[str]:
    return [e.unique_id for e in sorted(queued(engine), key=lambda e: e.id)]


def test_placed_order_sends_placed_and_one_ordered_product_per_line(
        shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(7, "placed", T0, items=2)
    tracker = tracker_for(shop, state_engine)
    report = tracker.run_once(now=NOW)
    assert report.events_enqueued == 3
    assert metrics(state_engine) == ["order:7:placed", "order:7:item:1", "order:7:item:2"]
    placed, first, second = sorted(queued(state_engine), key=lambda e: e.id)
    assert placed.metric == "Placed Order" and placed.occurred_at == T0
    assert placed.value == pytest.approx(9.99 * 3) and placed.value_currency == "USD"
    assert placed.customer_id == "1" and placed.email == "c1@example.com"
    assert placed.properties["OrderId"] == "7"
    assert placed.properties["ItemNames"] == ["Product 100", "Product 101"]
    assert placed.properties["Categories"] == ["Coffee", "Tea"]
    assert placed.properties["Items"][1] == {
        "ProductID": "101", "SKU": "SKU-101", "ProductName": "Product 101", "Quantity": 2,
        "ItemPrice": 9.99, "RowTotal": 19.98, "Categories": ["Tea"]}
    assert "$value" not in placed.properties
    assert (first.metric, second.metric) == ("Ordered Product", "Ordered Product")
    assert second.value == 19.98 and second.properties["ProductName"] == "Product 101"
    assert second.properties["OrderId"] == "7" and second.occurred_at == T0
    assert not placed.backfill
    assert tracker.run_once(now=NOW).events_enqueued == 0


def test_placed_then_cancelled(shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(1, "placed", T0)
    tracker = tracker_for(shop, state_engine)
    tracker.run_once(now=NOW)
    shop.set_status(1, "cancelled", T0 + timedelta(minutes=30))
    report = tracker.run_once(now=NOW)
    assert report.by_metric == {"Cancelled Order": 1} and report.orders_changed == 1
    cancelled = next(e for e in queued(state_engine) if e.metric == "Cancelled Order")
    assert cancelled.unique_id == "order:1:cancelled"
    assert cancelled.occurred_at == T0 + timedelta(minutes=30)
    assert cancelled.properties["Items"] and cancelled.value == pytest.approx(29.97)
    assert tracker.run_once(now=NOW).events_enqueued == 0


def test_placed_then_completed(shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(1, "placed", T0)
    tracker = tracker_for(shop, state_engine)
    tracker.run_once(now=NOW)
    shop.set_status(1, "completed", T0 + timedelta(minutes=5))
    assert tracker.run_once(now=NOW).by_metric == {"Fulfilled Order": 1}
    assert metrics(state_engine)[-1] == "order:1:fulfilled"
    assert tracker.run_once(now=NOW).events_enqueued == 0


def test_completed_then_refunded(shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(1, "completed", T0, T0 + timedelta(minutes=1), items=1)
    tracker = tracker_for(shop, state_engine)
    assert tracker.run_once(now=NOW).by_metric == {
        "Placed Order": 1, "Ordered Product": 1, "Fulfilled Order": 1}
    shop.set_status(1, "refunded", T0 + timedelta(minutes=20))
    assert tracker.run_once(now=NOW).by_metric == {"Refunded Order": 1}
    assert metrics(state_engine) == ["order:1:placed", "order:1:item:1", "order:1:fulfilled",
                                     "order:1:refunded"]
    assert tracker.run_once(now=NOW).events_enqueued == 0


@pytest.mark.parametrize(("status", "metric", "suffix"), [
    ("cancelled", "Cancelled Order", "cancelled"),
    ("completed", "Fulfilled Order", "fulfilled"),
])
def test_first_seen_in_a_later_state_gets_placed_first(
        shop: Shop, state_engine: sa.Engine, status: str, metric: str, suffix: str) -> None:
    shop.add_order(3, status, T0, T0 + timedelta(hours=2), items=1)
    tracker = tracker_for(shop, state_engine)
    tracker.run_once(now=NOW + timedelta(hours=2))
    events = sorted(queued(state_engine), key=lambda e: e.id)
    assert [e.unique_id for e in events] == ["order:3:placed", "order:3:item:1",
                                             f"order:3:{suffix}"]
    assert events[-1].metric == metric
    # Ordered by time too: the placement at created_at, the transition at updated_at.
    assert events[0].occurred_at == T0 < events[-1].occurred_at == T0 + timedelta(hours=2)
    assert tracker.run_once(now=NOW + timedelta(hours=2)).events_enqueued == 0


def test_a_transition_is_never_dated_before_the_placement(
        shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(3, "cancelled", T0, T0 - timedelta(minutes=5), items=0)
    tracker_for(shop, state_engine).run_once(now=NOW)
    times = {e.metric: e.occurred_at for e in queued(state_engine)}
    assert times == {"Placed Order": T0, "Cancelled Order": T0}


def test_status_that_flaps_back_never_resends(shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(1, "placed", T0)
    tracker = tracker_for(shop, state_engine)
    tracker.run_once(now=NOW)
    shop.set_status(1, "cancelled", T0 + timedelta(minutes=1))
    assert tracker.run_once(now=NOW).by_metric == {"Cancelled Order": 1}
    shop.set_status(1, "placed", T0 + timedelta(minutes=2))  # reinstated
    with capture_logs() as logs:
        report = tracker.run_once(now=NOW)
    assert report.events_enqueued == 0 and report.orders_changed == 1
    assert any(e["event"] == "order_status_reverted" and e["previous"] == "cancelled"
               for e in logs)
    with state_engine.connect() as conn:
        assert conn.execute(sa.select(order_sync.c.last_status)).scalar() == "placed"
    shop.set_status(1, "completed", T0 + timedelta(minutes=3))
    assert tracker.run_once(now=NOW).by_metric == {"Fulfilled Order": 1}
    shop.set_status(1, "cancelled", T0 + timedelta(minutes=4))  # cancelled a second time
    assert tracker.run_once(now=NOW).events_enqueued == 0
    assert metrics(state_engine) == ["order:1:placed", "order:1:item:1", "order:1:item:2",
                                     "order:1:cancelled", "order:1:fulfilled"]


def test_order_without_items(shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(5, "placed", T0, items=0, total=0.0)
    tracker = tracker_for(shop, state_engine)
    assert tracker.run_once(now=NOW).by_metric == {"Placed Order": 1}
    (placed,) = queued(state_engine)
    assert placed.properties["Items"] == [] and placed.properties["ItemNames"] == []
    assert placed.value == 0.0
    assert tracker.run_once(now=NOW).events_enqueued == 0


def test_order_of_a_missing_customer_still_gets_events(
        shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(9, "placed", T0, customer=4242, items=1)
    tracker = tracker_for(shop, state_engine)
    assert tracker.run_once(now=NOW).events_enqueued == 2
    assert {(e.customer_id, e.email) for e in queued(state_engine)} == {("4242", None)}


def test_row_committed_late_with_an_older_updated_at_is_read(
        shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(1, "placed", T0)
    tracker = tracker_for(shop, state_engine, shop.settings_with(
        orders=OrderSettings(page_size=50, overlap_s=300)))
    assert tracker.run_once(now=NOW).watermark is not None
    # A transaction that began before the pass commits now, stamped 2 minutes earlier.
    shop.add_order(2, "placed", T0 - timedelta(minutes=2), items=1)
    report = tracker.run_once(now=NOW)
    assert report.orders_new == 1 and report.by_metric == {"Placed Order": 1,
                                                           "Ordered Product": 1}
    # Older than the overlap: out of reach by design (overlap_s is that promise's size).
    shop.add_order(3, "placed", T0 - timedelta(minutes=10), items=0)
    assert tracker.run_once(now=NOW).orders_new == 0
    assert tracker.run_once(now=NOW).events_enqueued == 0


def test_a_pass_reads_only_what_changed_plus_the_overlap(
        shop: Shop, state_engine: sa.Engine) -> None:
    for n in range(1, 201):
        shop.add_order(n, "placed", T0 + timedelta(minutes=n), items=0)
    tracker = tracker_for(shop, state_engine, shop.settings_with(
        orders=OrderSettings(page_size=40, overlap_s=300)))
    first = tracker.run_once(now=NOW)
    assert (first.orders_read, first.pages, first.orders_new) == (200, 5, 200)
    shop.set_status(150, "cancelled", T0 + timedelta(minutes=300))
    again = tracker.run_once(now=NOW)
    # Orders 195-200 (the 5-minute overlap, bounds included) and the changed one.
    assert again.orders_read == 7 and again.by_metric == {"Cancelled Order": 1}


def test_keyset_pages_never_skip_or_repeat_orders_sharing_a_timestamp(
        shop: Shop, state_engine: sa.Engine) -> None:
    for n in range(1, 24):
        shop.add_order(n, "placed", T0, items=0)  # all with the same updated_at
    tracker = tracker_for(shop, state_engine, shop.settings_with(
        orders=OrderSettings(page_size=5)))
    report = tracker.run_once(now=NOW)
    assert (report.orders_read, report.pages, report.events_enqueued) == (23, 5, 23)


def test_unknown_status_is_logged_counted_and_skipped(
        shop: Shop, state_engine: sa.Engine) -> None:
    shop.add_order(1, "on-hold", T0)
    shop.add_order(2, "Shipped", T0, items=0)
    settings = shop.settings_with(orders=OrderSettings(fulfilled_statuses=("shipped",)))
    with capture_logs() as logs:
        report = tracker_for(shop, state_engine, settings).run_once(now=NOW)
    assert report.unknown_status == 1
    assert report.by_metric == {"Placed Order": 1, "Fulfilled Order": 1}
    assert [e["status"] for e in logs if e["event"] == "order_status_unknown"] == ["on-hold"]


def test_times_come_from_the_business_time_zone_and_old_orders_are_backfill(
        tmp_path: Path, state_engine: sa.Engine) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'b.db'}",
                BusinessSettings(url=f"sqlite:///{tmp_path / 'b.db'}",
                                 timezone="Europe/Berlin"))
    shop.add_order(1, "placed", datetime(2026, 7, 1, 14, 0), items=0)  # CEST, UTC+2
    shop.add_order(2, "placed", datetime(2020, 1, 1, 9, 0), items=0)  # CET, UTC+1
    tracker_for(shop, state_engine).run_once(now=datetime(2026, 7, 1, 12, 30))
    by_id = {e.unique_id: e for e in queued(state_engine)}
    assert by_id["order:1:placed"].occurred_at == datetime(2026, 7, 1, 12, 0)
    assert not by_id["order:1:placed"].backfill
    assert by_id["order:2:placed"].occurred_at == datetime(2020, 1, 1, 8, 0)
    assert by_id["order:2:placed"].backfill
    shop.close()


def test_a_crash_mid_pass_enqueues_nothing_twice(shop: Shop, state_engine: sa.Engine) -> None:
    for n in range(1, 31):
        shop.add_order(n, "completed", T0 + timedelta(minutes=n), items=1)
    settings = shop.settings_with(orders=OrderSettings(page_size=10))
    tracker = tracker_for(shop, state_engine, settings)
    real = tracker.queue.enqueue
    calls = []

    def crash_on_second_page(conn: sa.Connection, events: list, now: datetime) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(conn, events, now)

    tracker.queue.enqueue = crash_on_second_page  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        tracker.run_once(now=NOW)
    assert len(queued(state_engine)) == 30  # page 1 only: 10 x (placed, item, fulfilled)
    restarted = tracker_for(shop, state_engine, settings)
    report = restarted.run_once(now=NOW)
    assert report.events_enqueued == 60
    assert len(queued(state_engine)) == 90
    assert len({e.unique_id for e in queued(state_engine)}) == 90


def test_builder_is_off_without_a_business_database(state_engine: sa.Engine) -> None:
    assert App(Settings(), state_engine=state_engine).order_tracker is None
    off = Settings(business=BusinessSettings(url="sqlite:///x.db"),
                   orders=dataclasses.replace(OrderSettings(), enabled=False))
    assert App(off, state_engine=state_engine).order_tracker is None
