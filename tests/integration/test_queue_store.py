"""The queue store against every state backend (SQLite, PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from klaviyo_sync.exceptions import QueueError
from klaviyo_sync.queue import EventState, NewEvent, QueueStore, RetryPolicy

T0 = datetime(2026, 1, 1, 12, 0, 0)
LEASE = timedelta(seconds=60)


def make_event(n: int, **overrides: object) -> NewEvent:
    fields: dict = dict(unique_id=f"log:{n}", metric="started.signup", source="log",
                        occurred_at=T0 + timedelta(seconds=n), properties={"n": n},
                        customer_id=str(1000 + n), email=f"c{n}@example.com")
    fields.update(overrides)
    return NewEvent(**fields)


@pytest.fixture
def store(state_engine: sa.Engine) -> QueueStore:
    return QueueStore(state_engine)


def test_enqueue_is_idempotent_on_unique_id(store: QueueStore) -> None:
    batch = [make_event(n) for n in range(50)]
    assert store.enqueue_many(batch, now=T0) == 50
    assert store.enqueue_many(batch, now=T0) == 0
    assert store.enqueue_many([*batch, make_event(50)], now=T0) == 1
    assert store.counts()["pending"] == 51


def test_duplicate_ids_within_one_batch_are_one_row(store: QueueStore) -> None:
    assert store.enqueue_many([make_event(1), make_event(1)], now=T0) == 1


def test_claim_leases_counts_attempt_and_excludes_others(store: QueueStore) -> None:
    store.enqueue_many([make_event(n) for n in range(10)], now=T0)
    first = store.claim("a", 6, LEASE, now=T0)
    second = store.claim("b", 6, LEASE, now=T0)
    assert len(first) == 6 and len(second) == 4
    assert {e.id for e in first}.isdisjoint(e.id for e in second)
    assert all(e.attempts == 1 and e.state is EventState.LEASED for e in first)
    assert store.claim("c", 6, LEASE, now=T0) == []


def test_expired_lease_falls_due_again(store: QueueStore) -> None:
    store.enqueue_many([make_event(1)], now=T0)
    (event,) = store.claim("dead-runner", 5, LEASE, now=T0)
    assert store.claim("other", 5, LEASE, now=T0 + LEASE - timedelta(seconds=1)) == []
    (again,) = store.claim("other", 5, LEASE, now=T0 + LEASE)
    assert again.id == event.id and again.attempts == 2
    # The dead runner's late ack does not count: the row is no longer its own.
    assert store.ack([event.id], "dead-runner") == 0
    assert store.ack([event.id], "other") == 1
    assert store.get(event.id).state is EventState.SENT


def test_release_returns_events_without_spending_an_attempt(store: QueueStore) -> None:
    store.enqueue_many([make_event(1)], now=T0)
    (event,) = store.claim("a", 1, LEASE, now=T0)
    assert store.release([event.id], "a", delay=timedelta(seconds=5), now=T0) == 1
    assert store.claim("a", 1, LEASE, now=T0 + timedelta(seconds=4)) == []
    (again,) = store.claim("a", 1, LEASE, now=T0 + timedelta(seconds=5))
    assert again.attempts == 1


def test_fail_backs_off_then_dead_letters(store: QueueStore) -> None:
    store.enqueue_many([make_event(1)], now=T0)
    policy = RetryPolicy(max_attempts=2, base_s=10, max_s=100)
    (event,) = store.claim("a", 1, LEASE, now=T0)
    assert store.fail({event.id: "HTTP 503"}, "a", policy, now=T0) == (1, 0)
    retried = store.get(event.id)
    assert retried.state is EventState.PENDING and retried.last_error == "HTTP 503"
    assert T0 + timedelta(seconds=5) <= retried.next_attempt_at <= T0 + timedelta(seconds=10)
    (event,) = store.claim("a", 1, LEASE, now=T0 + timedelta(seconds=10))
    assert store.fail({event.id: "HTTP 503"}, "a", policy, now=T0) == (0, 1)
    dead = store.get(event.id)
    assert dead.state is EventState.DEAD and "gave up after 2 attempts: HTTP 503" in dead.last_error


def test_dead_letter_keeps_error_and_requeue_revives(store: QueueStore) -> None:
    store.enqueue_many([make_event(1), make_event(2, metric="cancelled")], now=T0)
    claimed = store.claim("a", 2, LEASE, now=T0)
    store.dead_letter({e.id: "400 invalid email" for e in claimed}, "a")
    assert [e.last_error for e in store.list(EventState.DEAD)] == ["400 invalid email"] * 2
    assert store.requeue(metric="cancelled") == 1
    assert store.requeue() == 1
    assert store.counts() == {"pending": 2, "leased": 0, "sent": 0, "dead": 0}


def test_purge_only_old_sent_and_never_pending(store: QueueStore) -> None:
    store.enqueue_many([make_event(n) for n in range(3)], now=T0)
    claimed = store.claim("a", 2, LEASE, now=T0)
    store.ack([e.id for e in claimed], "a", now=T0)
    assert store.purge(EventState.SENT, timedelta(days=1), now=T0 + timedelta(hours=1)) == 0
    assert store.purge(EventState.SENT, timedelta(days=1), now=T0 + timedelta(days=2)) == 2
    with pytest.raises(QueueError, match="undelivered"):
        store.purge(EventState.PENDING, timedelta(0))
    assert store.counts()["pending"] == 1


def test_get_unknown_id_is_a_queue_error(store: QueueStore) -> None:
    with pytest.raises(QueueError, match="no event with id 999"):
        store.get(999)


def test_leased_by_is_set_exactly_while_leased(store: QueueStore) -> None:
    store.enqueue_many([make_event(n) for n in range(4)], now=T0)
    a, b, c, d = store.claim("w", 4, LEASE, now=T0)
    assert all(e.leased_by == "w" for e in (a, b, c, d))
    store.ack([a.id], "w", now=T0)
    store.release([b.id], "w", now=T0)
    store.fail({c.id: "503"}, "w", RetryPolicy(), now=T0)
    store.dead_letter({d.id: "400"}, "w")
    assert [store.get(e.id).leased_by for e in (a, b, c, d)] == [None] * 4
    assert store.ack([a.id], "w", now=T0) == 0, "a second ack of a sent row changes nothing"


def test_meta_put_is_an_upsert(state_engine: sa.Engine) -> None:
    from klaviyo_sync.state import meta

    meta.put(state_engine, "k", "1")
    meta.put(state_engine, "k", "2")
    assert meta.get(state_engine, "k") == "2"
