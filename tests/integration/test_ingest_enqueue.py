"""The ingest's bulk insert and its background writer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from klaviyo_sync.parsers.entry import LogEntry
from klaviyo_sync.parsers.writer import OrderedWriter
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.queue.bulk import BulkEnqueuer
from klaviyo_sync.queue.drivers.sqlite_bulk import json_text
from klaviyo_sync.state.schema import events

NOW = datetime(2026, 1, 2, 3, 4, 5, 6)

# NaN and infinities are not JSON: json_text refuses them (test_json_finite.py).
flat_values = st.one_of(st.text(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                        st.none(), st.booleans())
json_values = st.recursive(flat_values, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8)


@given(st.dictionaries(st.text(), json_values, max_size=8))
def test_json_text_is_exactly_json_dumps(obj: dict) -> None:
    assert json_text(obj) == json.dumps(obj)


def entries() -> list[LogEntry]:
    second = datetime(2020, 5, 15, 12, 35, 32)  # one object for two lines, as parsed
    return [
        LogEntry("log:a", "started.signup", "Started Signup", second,
                 "1141260", "k@example.com", {"box": "705", "n": 1.5, "names": ["é", None]},
                 {"first_name": "Zoë"}, 47.95, "USD"),
        LogEntry("log:a2", "failed.payment", "failed.payment", second, "7", None,
                 {"OrderId": "o1", "Reason": 'say "no"\n'}, {}, 0.1, "EUR"),
        LogEntry("log:b", "cancelled", "cancelled", datetime(2020, 5, 15, 12, 40, 28, 123),
                 None, None, {}, {}, None, None),
    ]


def test_fast_rows_read_back_exactly_like_queue_store_rows(state_engine: sa.Engine) -> None:
    bulk = BulkEnqueuer(state_engine)
    with state_engine.begin() as conn:
        assert bulk.insert(conn, [bulk.row(e, True, NOW) for e in entries()], NOW) == 3
        assert bulk.insert(conn, [bulk.row(e, True, NOW) for e in entries()], NOW) == 0
    QueueStore(state_engine).enqueue_many(
        [replace(e.to_new_event(True), unique_id=e.unique_id + "-store") for e in entries()],
        NOW)
    with state_engine.connect() as conn:
        rows = {r.unique_id: r._asdict() for r in conn.execute(sa.select(events))}
        # Raw column values too (profile NULL vs JSON null, time format), not only decoded.
        raw = {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(
            "SELECT unique_id, CAST(properties AS TEXT), CAST(profile AS TEXT), "
            "CAST(occurred_at AS TEXT) FROM events"))}
    for e in entries():
        fast, slow = dict(rows[e.unique_id]), dict(rows[e.unique_id + "-store"])
        for row in (fast, slow):
            row.pop("id"), row.pop("unique_id")
        assert fast == slow
        assert raw[e.unique_id] == raw[e.unique_id + "-store"]


def test_many_rows_go_in_once_each_whatever_the_statement_sizes(state_engine: sa.Engine) -> None:
    # More rows than one multi-row INSERT takes, a count that is no power of two, repeats
    # inside the batch and across batches: each id is stored once, and counted once.
    bulk = BulkEnqueuer(state_engine)
    base = entries()[0]
    made = [replace(base, unique_id=f"log:{n}", properties={"n": n}) for n in range(5003)]
    first = [bulk.row(e, False, NOW) for e in made[:3001] + made[:10]]
    second = [bulk.row(e, False, NOW) for e in made]
    with state_engine.begin() as conn:
        assert bulk.insert(conn, first, NOW) == 3001
        assert bulk.insert(conn, second, NOW) == 5003 - 3001
    with state_engine.connect() as conn:
        stored = conn.execute(sa.select(events.c.unique_id, events.c.properties)
                              .order_by(events.c.id)).all()
    assert [(u, p["n"]) for u, p in stored] == [(f"log:{n}", n) for n in range(5003)]


def test_rows_held_back_by_add_go_in_at_flush_and_are_counted_once(
        state_engine: sa.Engine) -> None:
    bulk = BulkEnqueuer(state_engine)
    base = entries()[0]
    rows = [bulk.row(replace(base, unique_id=f"log:{n}"), False, NOW) for n in range(5000)]

    def collected(some: list) -> list:  # as the ingest collects them
        return [v for row in some for v in row] if bulk.row_width > 1 else some

    with state_engine.begin() as conn:
        counted = bulk.add(conn, collected(rows[:10])) + bulk.add(conn, collected(rows[10:4100]))
        counted += bulk.add(conn, collected(rows[:5])) + bulk.flush(conn)  # 5 are not new
        assert counted == 4100 and bulk.flush(conn) == 0
    with pytest.raises(RuntimeError), state_engine.begin() as conn:
        bulk.add(conn, collected(rows[4100:4110]))
        raise RuntimeError("rolled back")
    bulk.discard()  # what the ingest does after a rollback: nothing held survives it
    with state_engine.begin() as conn:
        assert bulk.flush(conn) == 0
    with state_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar() == 4100


class FakeDatabase:
    """Transactions over a list: committed items become visible only at commit."""

    def __init__(self) -> None:
        self.committed: list[int] = []
        self.transactions: list[list[int]] = []

    @contextmanager
    def begin(self) -> Iterator[list[int]]:
        pending: list[int] = []
        yield pending  # an exception here rolls back: pending is dropped
        self.committed += pending
        self.transactions.append(pending)


def test_writer_commits_in_order_and_reports_each_after_its_commit() -> None:
    db = FakeDatabase()
    done: list[tuple[int, int]] = []

    def on_done(n: int, result: int) -> None:
        assert n in db.committed  # reported only once committed
        done.append((n, result))

    writer: OrderedWriter[int, int] = OrderedWriter(
        db.begin, lambda conn, n: conn.append(n) or n * 2, on_done, max_weight=7)
    for n in range(50):
        writer.submit(n)
    writer.close()
    assert db.committed == list(range(50)) and done == [(n, n * 2) for n in range(50)]
    assert all(len(t) <= 7 for t in db.transactions)


def test_finish_runs_last_in_every_transaction_before_its_commit() -> None:
    db = FakeDatabase()

    def finish(conn: list[int], items: list[int]) -> None:
        assert items == conn  # every item applied in this transaction, in order
        conn.append(-1)

    writer: OrderedWriter[int, None] = OrderedWriter(
        db.begin, lambda conn, n: conn.append(n), lambda n, r: None, max_weight=4,
        finish=finish)
    for n in range(10):
        writer.submit(n)
    writer.close()
    assert all(t[-1] == -1 and -1 not in t[:-1] for t in db.transactions)
    assert [n for n in db.committed if n >= 0] == list(range(10))


def test_a_lone_item_is_committed_as_soon_as_the_writer_is_closed() -> None:
    db = FakeDatabase()
    # The transaction may stay open an hour: close() waiting for that would hang the test
    # (and trip pytest's timeout) rather than be measured against a stopwatch.
    writer: OrderedWriter[int, None] = OrderedWriter(db.begin, lambda conn, n: conn.append(n),
                                                     lambda n, r: None, max_open_s=3600)
    writer.submit(1)
    writer.close()
    assert db.committed == [1]


def test_writer_stops_at_the_first_error_and_rolls_its_transaction_back() -> None:
    db = FakeDatabase()

    def apply(conn: list[int], n: int) -> None:
        if n == 30:
            raise RuntimeError("disk full")
        conn.append(n)

    writer: OrderedWriter[int, None] = OrderedWriter(db.begin, apply, lambda n, r: None,
                                                     max_weight=10)
    with pytest.raises(RuntimeError, match="disk full"):  # by submit, or at the latest close
        for n in range(100):
            writer.submit(n)
        writer.close()
    writer.close()  # once handed over, the error is not raised again
    assert db.committed == list(range(len(db.committed))) and len(db.committed) <= 30
    assert 30 not in db.committed
