"""Acceptance: events carry the customer's CURRENT data from the business database
(SQLite, PostgreSQL, MariaDB), read with one query per batch."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.app import App
from klaviyo_sync.config import BusinessSettings, SuppressionSettings
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state.db import open_state
from tests.integration.test_send_runner import API_KEY, make_events, send_settings
from tests.klaviyo_standin import KlaviyoStandIn

CUSTOMERS = 30


def create_customers(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    md = sa.MetaData()
    table = sa.Table(
        "customers", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(320)), sa.Column("first_name", sa.String(100)),
        sa.Column("last_name", sa.String(100)), sa.Column("status", sa.String(32)),
        sa.Column("schedule", sa.String(32)), sa.Column("box", sa.Integer),
        sa.Column("signup_date", sa.Date), sa.Column("email_opt_in", sa.Boolean),
        sa.Column("updated_at", sa.DateTime),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [
            {"id": i, "email": f"cust{i}@example.com", "first_name": "Old",
             "last_name": "Name", "status": "Active", "schedule": "monthly", "box": 100 + i,
             "signup_date": date(2019, 1, 1), "email_opt_in": True} for i in range(CUSTOMERS)])
    return engine


def test_profile_carries_current_customer_data_one_query_per_batch(
        standin: KlaviyoStandIn, business_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    business = create_customers(business_url)
    state = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    QueueStore(state).enqueue_many(make_events(300, customers=CUSTOMERS))
    # The customer changes after the events were logged: Klaviyo must get the new data.
    with business.begin() as conn:
        conn.execute(sa.text(
            "UPDATE customers SET first_name = 'New', status = 'Stopped', "
            "schedule = 'weekly', box = 705, signup_date = :d WHERE id = 7"),
            {"d": date(2020, 5, 15)})
    settings = send_settings(standin.base_url, claim_batch=100, batch_max_events=100)
    settings = settings.replace(business=BusinessSettings(url=business_url),
                                suppression=SuppressionSettings(enabled=False))
    app = App(settings, state_engine=state)
    runner = app.runner
    report = runner.drain()
    assert report.sent == 300 and report.batches == 3
    assert runner.customers is not None
    assert runner.customers.queries == 3  # type: ignore[attr-defined]
    app.close()
    for event in standin.events:
        if event.profile.get("external_id") == "7":
            assert event.profile["first_name"] == "New"
            assert event.profile["properties"] == {
                "Schedule": "weekly", "Status": "Stopped", "Box": "705",
                "SignUpDate": "2020-05-15"}
        else:
            assert event.profile["first_name"] == "Old"
            assert event.profile["properties"]["Status"] == "Active"
    assert len(standin.events) == 300
    business.dispose()
    state.dispose()
