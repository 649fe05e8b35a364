"""The orders pass on every business database backend (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from klaviyo_sync.app import App
from klaviyo_sync.business.sample_data import create_schema, generate
from klaviyo_sync.config import BusinessSettings, OrderSettings, Settings
from klaviyo_sync.queue import QueueStore
from tests.integration.shop import Shop

NOW = datetime(2026, 3, 1, 12, 0)


def test_initial_sync_of_a_generated_shop_matches_its_known_answer(
        business_url: str, tmp_path: object) -> None:
    from klaviyo_sync.state.db import open_state

    settings = Settings(business=BusinessSettings(url=business_url),
                        orders=OrderSettings(page_size=97))
    writer = sa.create_engine(business_url)
    create_schema(writer, settings.business)
    summary = generate(writer, settings, customers=100, orders=400, seed=5, now=NOW)
    writer.dispose()
    state = open_state(f"sqlite:///{tmp_path}/state.db")
    app = App(settings, state_engine=state)
    tracker = app.order_tracker
    assert tracker is not None
    report = tracker.run_once(now=NOW)
    assert report.by_metric == summary.expected_initial_events()
    assert report.orders_read == 400 and report.pages == 5
    assert summary.missing_customer_ids  # the data set does cover missing customers
    assert tracker.run_once(now=NOW).events_enqueued == 0
    app.close()
    state.dispose()


def test_transitions_and_late_rows_on_each_backend(business_url: str, tmp_path: object) -> None:
    from klaviyo_sync.state.db import open_state

    shop = Shop(business_url)
    t0 = datetime(2026, 2, 1, 8, 0, 0)
    for n in range(1, 8):
        shop.add_order(n, "placed", t0, items=1)  # one timestamp, pages of 3
    state = open_state(f"sqlite:///{tmp_path}/state.db")
    app = App(shop.settings_with(orders=OrderSettings(page_size=3)), state_engine=state)
    tracker = app.order_tracker
    assert tracker is not None
    assert tracker.run_once(now=NOW).orders_new == 7
    shop.set_status(2, "cancelled", t0 + timedelta(minutes=10))
    shop.add_order(8, "completed", t0 - timedelta(minutes=1), t0 + timedelta(minutes=9))
    report = tracker.run_once(now=NOW)
    assert report.by_metric == {"Cancelled Order": 1, "Placed Order": 1,
                                "Ordered Product": 2, "Fulfilled Order": 1}
    assert tracker.run_once(now=NOW).events_enqueued == 0
    assert QueueStore(state).counts()["pending"] == 7 * 2 + 5
    app.close()
    shop.close()
    state.dispose()


def test_customer_lookup_uses_the_id_columns_own_type(business_url: str) -> None:
    from klaviyo_sync.business.customers import SqlCustomerReader
    from klaviyo_sync.business.db import open_business

    settings = BusinessSettings(url=business_url, customers_table="accounts")
    writer = sa.create_engine(business_url)
    md = sa.MetaData()
    accounts = sa.Table("accounts", md, sa.Column("id", sa.String(20), primary_key=True),
                        sa.Column("email", sa.String(100)), sa.Column("first_name", sa.String(9)),
                        sa.Column("last_name", sa.String(9)), sa.Column("status", sa.String(9)),
                        sa.Column("schedule", sa.String(9)), sa.Column("box", sa.String(9)),
                        sa.Column("signup_date", sa.Date), sa.Column("email_opt_in", sa.Boolean))
    md.create_all(writer)
    with writer.begin() as conn:
        conn.execute(accounts.insert(), [{"id": "A-1", "email": "a@x.org"},
                                         {"id": "007", "email": "b@x.org"}])
    writer.dispose()
    reader = SqlCustomerReader(open_business(business_url), settings)
    found = reader.lookup(["A-1", "007", "7", "missing"])
    assert {k: c.email for k, c in found.items()} == {"A-1": "a@x.org", "007": "b@x.org"}
    reader.engine.dispose()
