"""Pure parts of the orders stage: status mapping, transitions, event building, raw times."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from klaviyo_sync.business.order_events import OrderEventBuilder, order_properties
from klaviyo_sync.business.order_tracker import SyncRecord, plan_transitions
from klaviyo_sync.business.orders import (
    Order,
    OrderItem,
    OrderState,
    shift_raw_time,
    status_map,
)
from klaviyo_sync.config import OrderSettings

T0 = datetime(2026, 3, 1, 12, 0)
P, C, F, R = (OrderState.PLACED, OrderState.CANCELLED, OrderState.FULFILLED,
              OrderState.REFUNDED)


def record(*sent: OrderState, status: str = "placed") -> SyncRecord:
    return SyncRecord(order_id="1", last_status=status, sent=frozenset(sent), times={})


def order(items: tuple[OrderItem, ...] = (), currency: str | None = "EUR",
          total: float | None = 30.0) -> Order:
    return Order(id="42", customer_id="7", status="placed", total=total, currency=currency,
                 created_at=T0, updated_at=T0, items=items, raw_id=42, raw_updated_at=T0)


@pytest.mark.parametrize(("state", "known", "expected"), [
    (P, None, [P]),
    (C, None, [P, C]),
    (F, None, [P, F]),
    (R, None, [P, R]),
    (P, record(P), []),
    (C, record(P), [C]),
    (C, record(P, C), []),
    (F, record(P, C), [F]),  # reinstated, then completed
    (P, record(P, C, status="cancelled"), []),  # flapped back: nothing to send
    (R, record(P, F), [R]),
])
def test_plan_transitions(state: OrderState, known: SyncRecord | None,
                          expected: list[OrderState]) -> None:
    assert plan_transitions(state, known) == expected


def test_status_map_is_case_insensitive_and_covers_every_list() -> None:
    mapping = status_map(OrderSettings(fulfilled_statuses=("completed", "Shipped")))
    assert mapping["shipped"] is F and mapping["placed"] is P
    assert mapping["refunded"] is R and mapping["cancelled"] is C
    assert "on-hold" not in mapping


def test_order_properties_follow_klaviyo_naming() -> None:
    items = (OrderItem("5", "SKU-5", "Beans", 3, 9.99, "Coffee"),
             OrderItem("6", None, None, 1, 1.5, None))
    props = order_properties(order(items))
    assert props["Items"][0]["RowTotal"] == 29.97  # no float noise
    assert props["ItemNames"] == ["Beans"] and props["Categories"] == ["Coffee"]
    assert props["ItemCount"] == 4 and props["Items"][1]["Categories"] == []


def test_builder_uses_currency_default_and_backfill_threshold() -> None:
    builder = OrderEventBuilder("USD", backfill_before=T0 + timedelta(seconds=1))
    event = builder.order_event(order(currency=None), P, T0, {}, None)
    assert event.value_currency == "USD" and event.backfill
    assert event.unique_id == "order:42:placed" and event.source == "order"
    fresh = OrderEventBuilder("USD", backfill_before=T0)
    assert not fresh.order_event(order(), C, T0, {}, "a@b.c").backfill
    no_total = fresh.order_event(order(total=None), P, T0, {}, None)
    assert no_total.value is None and no_total.value_currency is None


def test_ordered_products_are_numbered_from_one() -> None:
    items = (OrderItem("5", "S", "A", 2, 2.5, "X"), OrderItem("6", "T", "B", 1, 1.0, None))
    events = OrderEventBuilder("USD", T0).ordered_products(order(items), "a@b.c")
    assert [e.unique_id for e in events] == ["order:42:item:1", "order:42:item:2"]
    assert [e.value for e in events] == [5.0, 1.0]
    assert events[0].value_currency == "EUR"


@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-03-01 12:00:00.000000", "2026-03-01 11:55:00.000000"),
    ("2026-03-01 12:00:00", "2026-03-01 11:55:00"),
    ("2026-03-01T12:00:00", "2026-03-01T11:55:00"),
    (T0, T0 - timedelta(minutes=5)),
])
def test_shift_raw_time_keeps_the_drivers_representation(raw: object, expected: object) -> None:
    assert shift_raw_time(raw, -300) == expected
