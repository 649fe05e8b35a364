"""Suppression through the real runner and order tracker, against the Klaviyo stand-in."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.app import App
from klaviyo_sync.config import KlaviyoSettings, SenderSettings, Settings, StateSettings
from klaviyo_sync.queue import NewEvent, QueueStore
from tests.integration.shop import Shop
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY

T0 = datetime(2026, 3, 1, 12, 0)


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    s = Shop(f"sqlite:///{tmp_path / 'business.db'}")
    s.add_customer(1, status="Dead")
    s.add_customer(2)  # Active, opted in
    s.add_customer(3, opt_in=False)
    return s


def settings_for(shop: Shop, klaviyo: KlaviyoStandIn, state_url: str) -> Settings:
    base = shop.settings_with()
    return base.replace(
        state=StateSettings(url=state_url),
        klaviyo=KlaviyoSettings(base_url=klaviyo.base_url, respect_published_limits=False,
                                timeout_s=10.0),
        sender=SenderSettings(backoff_base_s=0.0, backoff_max_s=0.0))


def drain(settings: Settings, engine: sa.Engine) -> None:
    with App(settings, state_engine=engine, worker_id="test") as app:
        report = app.runner.drain()
    assert report.dead == 0 and report.auth_error is None


def test_dead_customer_with_50_events_gets_50_events_and_one_suppression(
        shop: Shop, klaviyo: KlaviyoStandIn, state_url: str, state_engine: sa.Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    QueueStore(state_engine).enqueue_many(
        NewEvent(unique_id=f"log:dead:{n}", metric="failed.payment", source="log",
                 occurred_at=T0 + timedelta(seconds=n), properties={"n": n}, customer_id="1",
                 email="c1@example.com") for n in range(50))
    QueueStore(state_engine).enqueue_many(
        NewEvent(unique_id=f"log:live:{n}", metric="failed.payment", source="log",
                 occurred_at=T0 + timedelta(seconds=n), properties={"n": n}, customer_id="2",
                 email="c2@example.com") for n in range(5))
    settings = settings_for(shop, klaviyo, state_url)
    drain(settings, state_engine)
    dead_events = [e for e in klaviyo.events if e.unique_id.startswith("log:dead:")]
    assert len(dead_events) == 50
    assert klaviyo.suppression_requests == [["c1@example.com"]]
    assert set(klaviyo.suppressed) == {"c1@example.com"}
    drain(settings, state_engine)  # nothing due: nothing more
    assert len(klaviyo.suppression_requests) == 1
    shop.close()


def test_opted_out_customers_placed_order_triggers_suppression_active_one_never(
        shop: Shop, klaviyo: KlaviyoStandIn, state_url: str, state_engine: sa.Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    shop.add_order(100, "placed", T0, customer=3)
    shop.add_order(200, "placed", T0, customer=2)
    settings = settings_for(shop, klaviyo, state_url)
    app = App(settings, state_engine=state_engine)
    tracker = app.order_tracker
    assert tracker is not None
    tracker.run_once(now=T0 + timedelta(minutes=5))
    drain(settings, state_engine)
    placed = {e.unique_id for e in klaviyo.events if e.metric == "Placed Order"}
    assert placed == {"order:100:placed", "order:200:placed"}  # the event itself still goes
    assert klaviyo.suppression_requests == [["c3@example.com"]]
    # The active, opted-in customer orders again and completes: never suppressed.
    shop.set_status(200, "completed", T0 + timedelta(minutes=1))
    shop.add_order(201, "placed", T0 + timedelta(minutes=2), customer=2)
    tracker.run_once(now=T0 + timedelta(minutes=5))
    drain(settings, state_engine)
    assert all("c2@example.com" not in r for r in klaviyo.suppression_requests)
    assert "c2@example.com" not in klaviyo.suppressed
    app.close()
    shop.close()
