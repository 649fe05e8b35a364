"""The queue's driver contract: the same tests against every driver.

``sqlite`` and ``postgresql`` run on a real, migrated state database; ``memory`` is the
in-memory driver shipped for tests and the demo. A behaviour one driver has and another
lacks fails here, whichever it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from klaviyo_sync.exceptions import QueueError
from klaviyo_sync.parsers.entry import LogEntry
from klaviyo_sync.queue import (
    EventState,
    MemoryDriver,
    NewEvent,
    QueueStore,
    RetryPolicy,
    driver_for,
)
from klaviyo_sync.queue.bulk import BulkEnqueuer
from klaviyo_sync.state.db import open_state

T0 = datetime(2026, 1, 1, 12, 0, 0)
LEASE = timedelta(seconds=60)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres),
                        "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueStore]:
    """A QueueStore over each driver, on an empty queue."""
    if request.param == "memory":
        yield QueueStore(MemoryDriver())
        return
    url = (f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite"
           else str(request.getfixturevalue("pg_schema_url")))
    engine = open_state(url)
    driver = driver_for(engine)
    assert driver.name == request.param
    try:
        yield QueueStore(driver)
    finally:
        engine.dispose()


def make_event(n: int, **overrides: object) -> NewEvent:
    fields: dict = dict(unique_id=f"log:{n}", metric="started.signup", source="log",
                        occurred_at=T0 + timedelta(seconds=n), properties={"n": n},
                        customer_id=str(1000 + n), email=f"c{n}@example.com")
    fields.update(overrides)
    return NewEvent(**fields)


# --- producing ------------------------------------------------------------------------


def test_enqueue_is_idempotent_on_unique_id(store: QueueStore) -> None:
    batch = [make_event(n) for n in range(20)]
    assert store.enqueue_many(batch, now=T0) == 20
    assert store.enqueue_many(batch, now=T0) == 0
    assert store.enqueue_many([*batch, make_event(20), make_event(20)], now=T0) == 1
    assert store.counts()["pending"] == 21


def test_events_of_a_rolled_back_transaction_are_not_queued(store: QueueStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        assert store.enqueue(tx, [make_event(1), make_event(2)], now=T0) == 2
        raise RuntimeError("the checkpoint write failed")
    assert store.counts()["pending"] == 0
    with store.transaction() as tx:  # the same ids go in once the transaction commits
        assert store.enqueue(tx, [make_event(1)], now=T0) == 1
        assert store.enqueue(tx, [make_event(1), make_event(2)], now=T0) == 1
    assert [e.unique_id for e in store.list()] == ["log:1", "log:2"]


def test_bulk_rows_go_in_once_and_held_rows_at_flush(store: QueueStore) -> None:
    bulk = BulkEnqueuer(store)
    entries = [LogEntry(f"log:{n}", "started.signup", "Started Signup", T0, str(n),
                        f"c{n}@example.com", {"n": n}, {"first_name": "Zoë"}, 47.95, "USD")
               for n in range(30)]

    def collected(rows: list) -> list:  # as the ingest collects them
        return [v for row in rows for v in row] if bulk.row_width > 1 else rows

    rows = [bulk.row(e, False, T0) for e in entries]
    with store.transaction() as tx:
        counted = bulk.add(tx, collected(rows[:20]), T0) + bulk.add(tx, collected(rows[15:25]), T0)
        counted += bulk.flush(tx)
        assert counted == 25 and bulk.flush(tx) == 0
    with pytest.raises(RuntimeError), store.transaction() as tx:
        bulk.add(tx, collected(rows[25:]), T0)
        raise RuntimeError("rolled back")
    bulk.discard()
    with store.transaction() as tx:
        assert bulk.flush(tx) == 0
    stored = store.list(limit=100)
    assert [e.unique_id for e in stored] == [f"log:{n}" for n in range(25)]
    first = stored[0]
    assert (first.source, first.metric, first.occurred_at, first.profile, first.value,
            first.backfill, first.created_at) == ("log", "Started Signup", T0,
                                                   {"first_name": "Zoë"}, 47.95, False, T0)


# --- consuming ------------------------------------------------------------------------


def test_claim_leases_disjoint_rows_oldest_first_counting_an_attempt(
        store: QueueStore) -> None:
    store.enqueue_many([make_event(n) for n in reversed(range(10))], now=T0)
    first = store.claim("a", 6, LEASE, now=T0)
    second = store.claim("b", 6, LEASE, now=T0)
    assert len(first) == 6 and len(second) == 4
    assert {e.id for e in first}.isdisjoint(e.id for e in second)
    assert [e.occurred_at for e in first] == sorted(e.occurred_at for e in first)
    assert all(e.attempts == 1 and e.state is EventState.LEASED and e.leased_by == "a"
               and e.lease_until == T0 + LEASE for e in first)
    assert store.claim("c", 6, LEASE, now=T0) == []


def test_claimed_events_are_the_rows_as_stored(store: QueueStore) -> None:
    store.enqueue_many([make_event(1, profile={"first_name": "Ann"}, value=4.5,
                                   value_currency="EUR", backfill=True,
                                   properties={"nested": {"a": [1, None]}})], now=T0)
    (claimed,) = store.claim("a", 5, LEASE, now=T0)
    assert claimed == store.get(claimed.id)


def test_nothing_is_claimed_before_it_is_due(store: QueueStore) -> None:
    store.enqueue_many([make_event(1)], now=T0)
    assert store.claim("a", 5, LEASE, now=T0 - timedelta(seconds=1)) == []
    assert len(store.claim("a", 5, LEASE, now=T0)) == 1


def test_expired_lease_falls_due_again_and_fences_the_old_worker(store: QueueStore) -> None:
    store.enqueue_many([make_event(1)], now=T0)
    (event,) = store.claim("dead-runner", 5, LEASE, now=T0)
    assert store.claim("other", 5, LEASE, now=T0 + LEASE - timedelta(seconds=1)) == []
    (again,) = store.claim("other", 5, LEASE, now=T0 + LEASE)
    assert again.id == event.id and again.attempts == 2
    assert store.ack([event.id], "dead-runner") == 0
    assert store.release([event.id], "dead-runner") == 0
    assert store.fail({event.id: "late"}, "dead-runner", RetryPolicy(), now=T0) == (0, 0)
    assert store.dead_letter({event.id: "late"}, "dead-runner") == 0
    assert store.ack([event.id], "other", now=T0 + LEASE) == 1
    sent = store.get(event.id)
    assert (sent.state, sent.sent_at, sent.leased_by, sent.lease_until) == (
        EventState.SENT, T0 + LEASE, None, None)


def test_fail_backs_off_then_dead_letters(store: QueueStore) -> None:
    policy = RetryPolicy(max_attempts=2, base_s=10, max_s=10)
    store.enqueue_many([make_event(1)], now=T0)
    (event,) = store.claim("a", 1, LEASE, now=T0)
    assert store.fail({event.id: "HTTP 503"}, "a", policy, now=T0) == (1, 0)
    retried = store.get(event.id)
    assert retried.state is EventState.PENDING and retried.last_error == "HTTP 503"
    assert T0 + timedelta(seconds=5) <= retried.next_attempt_at <= T0 + timedelta(seconds=10)
    assert store.claim("a", 1, LEASE, now=T0) == []
    (event,) = store.claim("a", 1, LEASE, now=T0 + timedelta(seconds=10))
    assert store.fail({event.id: "HTTP 503"}, "a", policy, now=T0) == (0, 1)
    dead = store.get(event.id)
    assert dead.state is EventState.DEAD and dead.leased_by is None
    assert dead.last_error == "gave up after 2 attempts: HTTP 503"


def test_release_gives_events_back_without_spending_an_attempt(store: QueueStore) -> None:
    store.enqueue_many([make_event(1), make_event(2)], now=T0)
    claimed = store.claim("a", 5, LEASE, now=T0)
    ids = [e.id for e in claimed]
    assert store.release(ids, "a", delay=timedelta(seconds=30), reason="HTTP 429",
                         now=T0) == 2
    released = [store.get(i) for i in ids]
    assert all(e.state is EventState.PENDING and e.attempts == 0 and e.leased_by is None
               and e.next_attempt_at == T0 + timedelta(seconds=30)
               and e.last_error == "HTTP 429" for e in released)
    assert store.release([], "a") == 0


# --- operators ------------------------------------------------------------------------


def test_dead_letter_keeps_the_error_and_requeue_revives_by_id_or_metric(
        store: QueueStore) -> None:
    store.enqueue_many([make_event(1), make_event(2), make_event(3, metric="cancelled")],
                       now=T0)
    claimed = store.claim("a", 5, LEASE, now=T0)
    assert store.dead_letter({e.id: "HTTP 400: bad email" for e in claimed}, "a") == 3
    assert store.get(claimed[0].id).last_error == "HTTP 400: bad email"
    assert store.counts()["dead"] == 3
    assert store.requeue(metric="cancelled", now=T0) == 1
    assert store.requeue(ids=[claimed[0].id], now=T0) == 1
    revived = store.get(claimed[0].id)
    assert (revived.state, revived.attempts, revived.next_attempt_at) == (
        EventState.PENDING, 0, T0)
    assert store.counts() == {"pending": 2, "leased": 0, "sent": 0, "dead": 1}


def test_purge_deletes_only_old_finished_events_and_refuses_pending(
        store: QueueStore) -> None:
    store.enqueue_many([make_event(n) for n in range(4)], now=T0)
    claimed = store.claim("a", 2, LEASE, now=T0)
    store.ack([claimed[0].id], "a", now=T0)
    store.ack([claimed[1].id], "a", now=T0 + timedelta(days=2))
    for state in (EventState.PENDING, EventState.LEASED):
        with pytest.raises(QueueError, match="refusing to purge"):
            store.purge(state, timedelta(0))
    assert store.purge(EventState.SENT, timedelta(days=1), now=T0 + timedelta(days=2)) == 1
    assert store.purge(EventState.DEAD, timedelta(0), now=T0 + timedelta(days=9)) == 0
    assert store.counts() == {"pending": 2, "leased": 0, "sent": 1, "dead": 0}


def test_get_unknown_id_is_a_queue_error(store: QueueStore) -> None:
    with pytest.raises(QueueError, match="no event with id 424242"):
        store.get(424242)


def test_list_filters_by_state_and_metric_and_pages_in_id_order(store: QueueStore) -> None:
    store.enqueue_many([make_event(n, metric="cancelled" if n % 2 else "started.signup")
                        for n in range(10)], now=T0)
    store.claim("a", 2, LEASE, now=T0)
    everything = store.list()
    assert [e.id for e in everything] == sorted(e.id for e in everything)
    assert [e.unique_id for e in store.list(limit=3, offset=2)] == ["log:2", "log:3", "log:4"]
    assert {e.unique_id for e in store.list(state=EventState.LEASED)} == {"log:0", "log:1"}
    assert [e.unique_id for e in store.list(state=EventState.PENDING, metric="cancelled")] \
        == ["log:3", "log:5", "log:7", "log:9"]


# --- status and reports ---------------------------------------------------------------


def test_counts_name_every_state(store: QueueStore) -> None:
    assert store.counts() == {"pending": 0, "leased": 0, "sent": 0, "dead": 0}
    store.enqueue_many([make_event(n) for n in range(3)], now=T0)
    (event, *_rest) = store.claim("a", 2, LEASE, now=T0)
    store.ack([event.id], "a")
    assert store.counts() == {"pending": 1, "leased": 1, "sent": 1, "dead": 0}


def test_oldest_due_and_due_retries(store: QueueStore) -> None:
    assert store.oldest_due(T0) is None and not store.has_due_retries(T0)
    store.enqueue_many([make_event(1)], now=T0)
    store.enqueue_many([make_event(2)], now=T0 + timedelta(minutes=1))
    assert store.oldest_due(T0 + timedelta(minutes=5)) == T0
    assert not store.has_due_retries(T0 + timedelta(minutes=5))  # never tried yet
    store.claim("a", 1, LEASE, now=T0 + timedelta(minutes=5))
    later = T0 + timedelta(minutes=5) + LEASE
    assert not store.has_due_retries(later - timedelta(seconds=1))
    assert store.has_due_retries(later)  # its lease ran out: a retry is due
    assert store.oldest_due(later - timedelta(seconds=1)) == T0 + timedelta(minutes=1)
    assert store.oldest_due(later) == T0  # the expired lease's event is due again


def test_metric_and_source_counts(store: QueueStore) -> None:
    store.enqueue_many([make_event(1), make_event(2), make_event(3, metric="cancelled"),
                        make_event(4, source="order", metric="Placed Order")], now=T0)
    assert store.metric_counts(source="log") == {"started.signup": 2, "cancelled": 1}
    assert store.metric_counts() == {"started.signup": 2, "cancelled": 1, "Placed Order": 1}
    assert store.source_count("order") == 1 and store.source_count("log") == 3


def test_signup_attempts_are_counted_per_person_in_the_window(store: QueueStore) -> None:
    day = timedelta(days=1)
    store.enqueue_many([
        make_event(1, customer_id="7", email="a@example.com", occurred_at=T0),
        make_event(2, customer_id="7", email="a@example.com", occurred_at=T0 + day),
        make_event(3, customer_id="7", email="a@example.com", occurred_at=T0 + 3 * day),
        make_event(4, customer_id=None, email="b@example.com", occurred_at=T0 + day),
        make_event(5, customer_id="8", email=None, occurred_at=T0 + day, metric="cancelled"),
    ], now=T0)
    found = {(a.customer_id, a.email): (a.first_at, a.last_at, a.count)
             for a in store.signup_attempts("started.signup", T0, T0 + 3 * day)}
    assert found == {("7", "a@example.com"): (T0, T0 + day, 2),
                     (None, "b@example.com"): (T0 + day, T0 + day, 1)}
    everything = store.signup_attempts("started.signup")
    assert sorted(a.count for a in everything) == [1, 3]


def test_logged_profiles_come_oldest_first(store: QueueStore) -> None:
    store.enqueue_many([
        make_event(1, customer_id="7", occurred_at=T0 + timedelta(hours=2),
                   profile={"first_name": "Newer"}),
        make_event(2, customer_id="7", occurred_at=T0, profile={"first_name": "Older"}),
        make_event(3, customer_id="8", occurred_at=T0 + timedelta(hours=1), profile=None),
        make_event(4, customer_id="9", occurred_at=T0, profile={"first_name": "Other"}),
        make_event(5, customer_id="7", occurred_at=T0, metric="cancelled",
                   profile={"first_name": "Wrong metric"}),
    ], now=T0)
    assert list(store.logged_profiles("started.signup", ["7", "8"])) == [
        ("7", {"first_name": "Older"}), ("8", None), ("7", {"first_name": "Newer"})]
    assert list(store.logged_profiles("started.signup", [])) == []


# --- runners that died, people who asked to be forgotten --------------------------------


def test_orphaned_leases_fall_due_at_once_with_the_attempt_spent(store: QueueStore) -> None:
    store.enqueue_many([make_event(n) for n in range(6)], now=T0)
    dead = store.claim("dead:1", 4, LEASE, now=T0)
    alive = store.claim("alive:2", 2, LEASE, now=T0)
    assert store.release_orphans(["dead:1", "gone:3"], now=T0) == 4
    counts = store.counts()
    assert counts["pending"] == 4 and counts["leased"] == 2
    again = store.claim("alive:2", 10, LEASE, now=T0)
    assert {e.id for e in again} == {e.id for e in dead}
    assert all(e.attempts == 2 for e in again)  # one spent by the dead claim, one now
    assert store.ack([e.id for e in alive], "alive:2", now=T0) == 2


def test_one_persons_events_are_found_counted_and_erased(store: QueueStore) -> None:
    store.enqueue_many([make_event(1, email="Ann@Example.com", customer_id=None),
                        make_event(2, email=None, customer_id="77"),
                        make_event(3, email="ann@example.com", customer_id="77"),
                        make_event(4), make_event(5)], now=T0)
    store.ack([e.id for e in store.claim("w", 1, LEASE, now=T0)], "w", now=T0)  # log:1 sent
    with store.transaction() as tx:
        assert store.person_counts(tx, ["ann@example.com"], ["77"]) == {"sent": 1,
                                                                       "pending": 2}
        assert sorted(store.person_identities(tx, ["ann@example.com"], []),
                      key=str) == [("Ann@Example.com", None), ("ann@example.com", "77")]
        assert store.person_counts(tx, [], []) == {}
    with store.transaction() as tx:
        assert store.erase_person(tx, ["ann@example.com"], ["77"]) == 3
    assert sorted(e.unique_id for e in store.list()) == ["log:4", "log:5"]
    with store.transaction() as tx:  # erased ids may come again (a log replay)
        assert store.enqueue(tx, [make_event(3)], now=T0) == 1


def test_only_the_holder_drops_its_claimed_events(store: QueueStore) -> None:
    store.enqueue_many([make_event(n) for n in range(3)], now=T0)
    held = [e.id for e in store.claim("w1", 2, LEASE, now=T0)]
    assert store.drop_claimed(held, "w2") == 0
    assert store.drop_claimed(held, "w1") == 2
    assert store.counts() == {"pending": 1, "leased": 0, "sent": 0, "dead": 0}
