"""The wiring (app.py): each part built once from the settings, every part closed once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.app import App
from klaviyo_sync.business.customers import InMemoryCustomers
from klaviyo_sync.business.order_tracker import OrderTracker
from klaviyo_sync.business.suppression import Suppressor
from klaviyo_sync.config import (
    KlaviyoSettings,
    OrderSettings,
    SenderSettings,
    Settings,
    StateSettings,
    SuppressionSettings,
)
from klaviyo_sync.daemon.locks import AdvisoryLock, NoLock
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.senders.audit import AuditLog
from klaviyo_sync.senders.client import KlaviyoClient
from klaviyo_sync.senders.dryrun import DryRunSender
from tests.integration.shop import Shop


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = Shop(f"sqlite:///{tmp_path / 'business.db'}")
    s.add_customer(1)
    yield s
    s.close()


def full_settings(shop: Shop, state_url: str, tmp_path: Path) -> Settings:
    return shop.settings_with().replace(
        state=StateSettings(url=state_url),
        sender=SenderSettings(kind="dry-run", outbox=str(tmp_path / "outbox.jsonl")))


def disposals(engine: sa.Engine) -> list[sa.Engine]:
    seen: list[sa.Engine] = []
    sa.event.listen(engine, "engine_disposed", seen.append)
    return seen


def test_each_part_is_built_once_and_shared(shop: Shop, state_url: str, tmp_path: Path
                                            ) -> None:
    with App(full_settings(shop, state_url, tmp_path), worker_id="w:1") as app:
        runner, tracker = app.runner, app.order_tracker
        assert runner is app.runner and tracker is app.order_tracker
        assert app.ingestor is app.ingestor and app.queue is app.queue
        assert runner.store is app.queue
        assert runner.sender is app.sender and runner.worker_id == "w:1"
        assert isinstance(tracker, OrderTracker) and isinstance(app.suppression, Suppressor)
        # One suppressor and one customer directory, shared by the runner and the tracker.
        assert runner.suppression is app.suppression is tracker.observer
        assert runner.customers is app.customers is tracker.customers
        assert runner.engine is app.state_engine is tracker.state_engine


def test_close_closes_every_part_once(shop: Shop, state_url: str, tmp_path: Path) -> None:
    app = App(full_settings(shop, state_url, tmp_path))
    state, business = app.state_engine, app.business_engine
    assert business is not None
    state_disposed, business_disposed = disposals(state), disposals(business)
    sender = app.runner.sender
    assert isinstance(sender, DryRunSender)
    lock = app.role_lock("tail", "/var/log/a.log")
    assert lock.ensure() and lock.held
    app.close()
    assert state_disposed == [state] and business_disposed == [business]
    assert sender._file.closed
    if isinstance(lock, AdvisoryLock):
        assert not lock.held
    app.close()  # the second close does nothing
    assert state_disposed == [state] and business_disposed == [business]
    with pytest.raises(RuntimeError, match="closed"):
        _ = app.runner


def test_a_given_state_engine_is_used_and_left_open(state_engine: sa.Engine, tmp_path: Path
                                                    ) -> None:
    disposed = disposals(state_engine)
    settings = Settings(state=StateSettings(url="sqlite:///unused.db"),
                        sender=SenderSettings(kind="dry-run",
                                              outbox=str(tmp_path / "outbox.jsonl")))
    with App(settings, state_engine=state_engine) as app:
        assert app.state_engine is state_engine and app.runner.engine is state_engine
    assert disposed == []
    with state_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_role_locks_follow_the_state_backend(state_engine: sa.Engine) -> None:
    with App(Settings(), state_engine=state_engine) as app:
        lock = app.role_lock("orders", "db")
        expected = AdvisoryLock if state_engine.dialect.name == "postgresql" else NoLock
        assert isinstance(lock, expected) and lock.ensure() and lock.held
        assert isinstance(app.role_lock("tail", "x", enabled=False), NoLock)


def test_dry_run_sender_keeps_no_audit_trail(state_engine: sa.Engine, tmp_path: Path) -> None:
    settings = Settings(sender=SenderSettings(kind="dry-run",
                                              outbox=str(tmp_path / "outbox.jsonl")))
    with App(settings, state_engine=state_engine) as app:
        assert isinstance(app.sender, DryRunSender) and app.sender.audit is None


def test_api_sender_audits_under_the_apps_worker_id(state_engine: sa.Engine,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_test_wiring")
    settings = Settings(klaviyo=KlaviyoSettings(base_url="http://127.0.0.1:9"),
                        sender=SenderSettings(kind="klaviyo"))
    with App(settings, state_engine=state_engine, worker_id="host:42") as app:
        sender = app.sender
        assert isinstance(sender, KlaviyoClient)
        assert isinstance(sender.audit, AuditLog) and sender.audit.worker == "host:42"
        assert sender.audit.engine is state_engine


def test_optional_parts_are_none_without_a_business_database(state_engine: sa.Engine,
                                                              tmp_path: Path) -> None:
    settings = Settings(sender=SenderSettings(kind="dry-run",
                                              outbox=str(tmp_path / "outbox.jsonl")),
                        suppression=SuppressionSettings(enabled=False))
    with App(settings, state_engine=state_engine) as app:
        assert app.business_engine is None and app.customers is None
        assert app.order_tracker is None and app.suppression is None
        assert app.runner.customers is None and app.runner.suppression is None
        with pytest.raises(ConfigError, match=r"business\.url is empty"):
            app.missed_signups()


def test_orders_off_keeps_the_customer_directory(shop: Shop, state_engine: sa.Engine) -> None:
    settings = shop.settings_with(orders=OrderSettings(enabled=False))
    with App(settings, state_engine=state_engine) as app:
        assert app.order_tracker is None and app.customers is not None


def test_given_parts_replace_the_built_ones(shop: Shop, state_engine: sa.Engine,
                                            tmp_path: Path) -> None:
    directory = InMemoryCustomers()
    sender = DryRunSender(tmp_path / "mine.jsonl")
    with App(shop.settings_with(), state_engine=state_engine, sender=sender,
             customers=directory, suppression=None) as app:
        assert app.runner.sender is sender and app.runner.customers is directory
        assert app.runner.suppression is None
        tracker = app.order_tracker
        assert tracker is not None and tracker.customers is directory
        assert tracker.observer is None
    assert not sender._file.closed  # given parts belong to whoever made them
    sender.close()
