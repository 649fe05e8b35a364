"""What the runner's claim hands over: the queued rows exactly, on every state backend."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from klaviyo_sync.queue import EventState, NewEvent, QueueStore

T0 = datetime(2026, 1, 1, 12, 0, 0)
LEASE = timedelta(seconds=60)


@pytest.fixture
def store(state_engine: sa.Engine) -> QueueStore:
    return QueueStore(state_engine)


def test_claimed_events_are_the_rows_as_stored(store: QueueStore) -> None:
    # A claim reads back only what it did not set itself, and parses it without
    # SQLAlchemy's processors: what it returns must still be the row as any read shows it.
    store.enqueue_many([
        NewEvent(unique_id="log:1", metric="started.signup", source="log",
                 occurred_at=T0 + timedelta(microseconds=123456),
                 properties={"n": 1, "nested": {"a": [1, None]}, "note": "naïve ☃"},
                 customer_id="7", email="zoë@example.com", profile={"first_name": "Zoë"},
                 value=47.95, value_currency="EUR", backfill=True),
        NewEvent(unique_id="order:2", metric="placed.order", source="order",
                 occurred_at=T0, properties={}, customer_id=None, email="a@example.com"),
    ], now=T0)
    claimed = store.claim("w", 5, LEASE, now=T0)
    assert [e.unique_id for e in claimed] == ["order:2", "log:1"]  # oldest first
    assert claimed == [store.get(e.id) for e in claimed]
    first = claimed[1]
    assert first.state is EventState.LEASED and first.leased_by == "w"
    assert first.lease_until == first.next_attempt_at == T0 + LEASE
    assert first.occurred_at == T0 + timedelta(microseconds=123456)
    assert first.properties["nested"] == {"a": [1, None]} and first.profile == {
        "first_name": "Zoë"}
    assert claimed[0].profile is None and claimed[0].sent_at is None
