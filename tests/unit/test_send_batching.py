"""Grouping events into requests, and the bodies Klaviyo gets."""

from __future__ import annotations

import json
from datetime import datetime

from klaviyo_sync.senders.base import OutgoingEvent
from klaviyo_sync.senders.batching import BatchCaps, JobKind, plan
from klaviyo_sync.senders.payloads import (
    BulkEncoder,
    bulk_body,
    encode,
    event_attributes,
    single_event_body,
)


def make_event(n: int, email: str | None = None, uid: str | None = None, size: int = 10,
               **kw: object) -> OutgoingEvent:
    defaults: dict = dict(
        queue_id=n, unique_id=uid or f"u{n}", metric="cancelled",
        time=datetime(2020, 5, 15, 12, 35, 32, 123456),
        properties={"reason": "x" * size},
        profile={"email": email or f"c{n % 7}@example.com", "external_id": str(n % 7)},
    )
    defaults.update(kw)
    return OutgoingEvent(**defaults)


def test_few_events_go_as_singles() -> None:
    jobs = plan([make_event(i) for i in range(3)], BatchCaps(single_threshold=3))
    assert [j.kind for j in jobs] == [JobKind.SINGLE] * 3


def test_bulk_jobs_respect_event_and_byte_caps_and_carry_each_event_once() -> None:
    events = [make_event(i, size=500) for i in range(2500)]
    caps = BatchCaps(max_events=1000, max_bytes=200_000, single_threshold=3)
    jobs = plan(events, caps)
    carried = [e.queue_id for j in jobs for e in j.events]
    assert sorted(carried) == list(range(2500))
    for job in jobs:
        assert len(job.events) <= 1000
        if job.kind is JobKind.BULK:
            body, _ = bulk_body(job.events)
            assert len(encode(body)) <= caps.max_bytes


def test_a_profile_events_share_one_entry() -> None:
    events = [make_event(i) for i in range(70)]
    (job,) = plan(events, BatchCaps())
    body, entries = bulk_body(job.events)
    data = body["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(data) == 7 == len(entries)
    emails = [d["attributes"]["profile"]["data"]["attributes"]["email"] for d in data]
    assert len(set(emails)) == 7


def test_never_two_events_with_one_unique_id_in_a_request() -> None:
    events = [make_event(i, uid=f"dup{i % 3}") for i in range(12)]
    jobs = plan(events, BatchCaps(single_threshold=0))
    for job in jobs:
        uids = [e.unique_id for e in job.events]
        assert len(uids) == len(set(uids))
    assert sorted(e.queue_id for j in jobs for e in j.events) == list(range(12))


def test_event_body_has_time_in_utc_with_offset_value_currency_and_backfill() -> None:
    event = make_event(1, value=47.95, value_currency="USD", backfill=True)
    attrs = single_event_body(event)["data"]["attributes"]
    assert attrs["time"] == "2020-05-15T12:35:32+00:00"
    assert attrs["value"] == 47.95 and attrs["value_currency"] == "USD"
    assert attrs["unique_id"] == "u1" and attrs["backfill"] is True
    assert attrs["metric"]["data"]["attributes"]["name"] == "cancelled"
    assert attrs["profile"]["data"]["attributes"]["email"] == "c1@example.com"
    body, _ = bulk_body([event, make_event(2)])
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    assert [e["attributes"]["backfill"] for e in entries] == [True, False]
    assert "backfill" not in entries[0]["attributes"]["events"]["data"][0]["attributes"]
    json.loads(encode(body))


def test_event_fragment_is_the_encoded_event_byte_for_byte() -> None:
    # Fragments are assembled from parts (no dict per event): they must still be exactly
    # what encoding the event's attributes gives, whatever the event carries.
    events = [make_event(1), make_event(2, value=47.95, value_currency="EUR"),
              make_event(3, value=0.0), make_event(4, metric='say "naïve" ☃\n', uid="ü\t1",
                                                    properties={"when": datetime(2020, 1, 2),
                                                                "nested": {"a": [1, None]}}),
              make_event(5, time=datetime(2021, 3, 4, 5, 6, 7).astimezone(), properties={}),
              make_event(6, time=datetime(2021, 3, 4, 5, 6, 7))]
    encoder = BulkEncoder()
    for event in events:
        expected = encode({"type": "event", "attributes": event_attributes(event)})
        assert encoder.fragment(event).encode("utf-8") == expected


def test_encoder_joins_fragments_into_exactly_the_bulk_body() -> None:
    events = [make_event(i, value=1.5, backfill=i % 2 == 0) for i in range(40)]
    events.append(make_event(99, email="zoë@example.com", properties={"note": "naïve ☃"}))
    raw, entries = BulkEncoder().bulk(events)
    body, expected_entries = bulk_body(events)
    assert json.loads(raw) == body and entries == expected_entries
