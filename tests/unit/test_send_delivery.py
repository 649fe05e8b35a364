"""Taking refused bulk requests apart, on a fake transport that answers like Klaviyo."""

from __future__ import annotations

import json
from typing import Any

from klaviyo_sync.exceptions import (
    AuthError,
    PayloadTooLargeError,
    RateLimitedError,
    RejectedSendError,
    RetryableSendError,
)
from klaviyo_sync.senders.base import OutgoingEvent
from klaviyo_sync.senders.batching import BatchCaps
from klaviyo_sync.senders.delivery import deliver
from tests.unit.test_send_batching import make_event

CAPS = BatchCaps(max_events=1000, max_bytes=5_000_000, single_threshold=1)


class FakeKlaviyo:
    """Records events by unique_id; refuses poison and (in bulk) known unique_ids,
    pointing at the first offender only, as Klaviyo does."""

    def __init__(self, poison: set[str] = frozenset(), pointers: bool = True,
                 max_bulk: int = 10_000) -> None:
        self.recorded: dict[str, int] = {}
        self.poison = set(poison)
        self.pointers = pointers
        self.max_bulk = max_bulk
        self.calls: list[tuple[str, int]] = []
        self.fail_with: Exception | None = None

    def post_event(self, event: OutgoingEvent) -> None:
        self.calls.append(("single", 1))
        if self.fail_with:
            raise self.fail_with
        if event.unique_id in self.poison:
            raise RejectedSendError(f"400 bad event {event.unique_id}",
                                    [{"code": "invalid", "detail": "bad"}], 400)
        self.recorded[event.unique_id] = self.recorded.get(event.unique_id, 0) + 1

    def post_bulk(self, raw: bytes, items: int) -> None:
        body: dict[str, Any] = json.loads(raw)
        self.calls.append(("bulk", items))
        if self.fail_with:
            raise self.fail_with
        if items > self.max_bulk:
            raise PayloadTooLargeError("413", [], 413)
        entries = body["data"]["attributes"]["events-bulk-create"]["data"]
        for i, entry in enumerate(entries):
            for j, ev in enumerate(entry["attributes"]["events"]["data"]):
                uid = ev["attributes"]["unique_id"]
                pointer = f"/data/attributes/events-bulk-create/data/{i}/attributes/events/data/{j}"
                source = {"pointer": pointer} if self.pointers else {}
                if uid in self.poison:
                    raise RejectedSendError("400", [{"code": "invalid", "detail": f"bad {uid}",
                                                     "source": source}], 400)
                if uid in self.recorded:
                    raise RejectedSendError("400", [{
                        "code": "duplicate_unique_id", "source": source,
                        "detail": f"An event with unique_id {uid!r} already exists"}], 400)
        for entry in entries:
            for ev in entry["attributes"]["events"]["data"]:
                uid = ev["attributes"]["unique_id"]
                self.recorded[uid] = self.recorded.get(uid, 0) + 1


def test_poison_events_are_isolated_and_the_rest_recorded_once() -> None:
    events = [make_event(i) for i in range(200)]
    fake = FakeKlaviyo(poison={"u17", "u150"})
    report = deliver(fake, events, CAPS)
    assert set(report.dead) == {17, 150}
    assert "bad" in report.dead[17]
    assert sorted(report.sent) == [i for i in range(200) if i not in (17, 150)]
    assert all(n == 1 for n in fake.recorded.values()) and len(fake.recorded) == 198
    assert len(fake.calls) <= 6


def test_without_pointers_the_batch_is_halved_until_the_offender_stands_alone() -> None:
    events = [make_event(i) for i in range(64)]
    fake = FakeKlaviyo(poison={"u5"}, pointers=False)
    report = deliver(fake, events, CAPS)
    assert report.dead.keys() == {5}
    assert len(report.sent) == 63 and len(fake.recorded) == 63
    assert len(fake.calls) <= 2 * 7 + 1


def test_a_resent_batch_refused_for_known_unique_ids_is_acked_not_dead() -> None:
    first = [make_event(i) for i in range(50)]
    fake = FakeKlaviyo()
    deliver(fake, first[:30], CAPS)
    resent = [make_event(i, resend=i < 30) for i in range(50)]
    report = deliver(fake, resent, CAPS)
    assert not report.dead
    assert sorted(report.sent + report.already_recorded) == list(range(50))
    assert all(n == 1 for uid, n in fake.recorded.items() if int(uid[1:]) >= 30)
    assert len(fake.calls) <= 1 + 1 + 30 + 1  # first try, ..., singles for resends, bulk


def test_413_splits_the_batch() -> None:
    fake = FakeKlaviyo(max_bulk=100)
    report = deliver(fake, [make_event(i) for i in range(300)], CAPS)
    assert len(report.sent) == 300 and len(fake.recorded) == 300
    assert max(n for kind, n in fake.calls if kind == "bulk" and n <= 100) <= 100


def test_server_errors_mean_retry_for_every_event_of_the_request() -> None:
    fake = FakeKlaviyo()
    fake.fail_with = RetryableSendError("503")
    report = deliver(fake, [make_event(i) for i in range(10)], CAPS)
    assert sorted(report.retry) == list(range(10)) and not report.sent


def test_refused_credentials_halt_and_defer_everything() -> None:
    fake = FakeKlaviyo()
    fake.fail_with = AuthError("401")
    caps = BatchCaps(max_events=10, single_threshold=1)
    report = deliver(fake, [make_event(i) for i in range(50)], caps)
    assert sorted(report.deferred) == list(range(50))
    assert report.auth_error and len(fake.calls) == 1


def test_rate_limit_past_waiting_defers_without_failure() -> None:
    fake = FakeKlaviyo()
    fake.fail_with = RateLimitedError("429", 7.0)
    report = deliver(fake, [make_event(i) for i in range(20)], CAPS)
    assert sorted(report.deferred) == list(range(20)) and report.deferred_for_s == 7.0
    assert not report.retry and not report.dead


def test_hundreds_of_known_unique_ids_in_one_batch_do_not_exhaust_the_stack() -> None:
    # Events Klaviyo has although the queue never claimed them before (a queue rebuilt
    # from the same logs): one refusal per event, each naming one; no RecursionError.
    events = [make_event(i) for i in range(800)]
    fake = FakeKlaviyo()
    for event in events[:700]:
        fake.recorded[event.unique_id] = 1
    report = deliver(fake, events, CAPS)
    assert not report.dead and not report.retry
    assert sorted(report.already_recorded) == list(range(700))
    assert sorted(report.sent) == list(range(700, 800))
    assert all(n == 1 for n in fake.recorded.values()) and len(fake.recorded) == 800
