"""Acceptance: 10,000 events through a faulty Klaviyo, each good one recorded exactly once.

5% of requests answer 500, 429 bursts come and go, credentials are refused for a while and
20 poison events are refused by Klaviyo. Afterwards: every good event recorded once, the
20 dead-lettered with Klaviyo's error text, nothing sent while credentials were refused,
and no attempt spent on a 429.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from klaviyo_sync.app import App
from klaviyo_sync.queue import EventState, QueueStore
from klaviyo_sync.state import meta
from tests.integration.test_send_runner import (
    API_KEY,
    directory,
    make_events,
    send_settings,
)
from tests.klaviyo_standin import KlaviyoStandIn

pytestmark = pytest.mark.slow

TOTAL = 10_000
POISON = {f"log:{i:07d}": f"Poison event {i}: property 'n' must not be {i}"
          for i in range(137, TOTAL, 499)}


@pytest.fixture
def klaviyo_options() -> dict[str, Any]:
    return {"seed": 7}


def test_faults_each_good_event_recorded_once(standin: KlaviyoStandIn,
                                              state_engine: sa.Engine,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    assert len(POISON) == 20
    store = QueueStore(state_engine)
    store.enqueue_many(make_events(TOTAL))
    settings = send_settings(standin.base_url, claim_batch=500, batch_max_events=250,
                             concurrency=2, max_attempts=25)
    app = App(settings, state_engine=state_engine, customers=directory(), suppression=None)
    runner = app.runner

    standin.faults.reject_unique_ids(POISON)
    # 1. 429 bursts: waited out inline, or handed back to the queue, never an attempt.
    standin.faults.rate_limit_next(3, retry_after=1)
    first = runner.drain(max_batches=2)
    assert first.sent + first.dead == 1000 and first.dead == 2
    assert {e.attempts for e in store.list(EventState.SENT, limit=TOTAL)} == {1}
    assert sum(1 for r in standin.requests if r.status == 429) == 3

    # 2. Credentials refused: the pass stops at once, nothing is recorded, nothing spent.
    recorded_before = len(standin.events)
    standin.faults.auth_failing(True)
    requests_before = len(standin.requests)
    window = runner.drain()
    assert window.auth_error and window.sent == 0
    assert len(standin.events) == recorded_before
    assert len(standin.requests) - requests_before <= settings.sender.concurrency
    assert meta.get_json(state_engine, meta.AUTH_FAILURE)
    assert store.counts()["leased"] == 0
    assert all(e.attempts == 0 for e in store.list(EventState.PENDING, limit=TOTAL))
    standin.faults.auth_failing(False)

    # 3. The rest through 5% server errors, poison events and more 429 bursts.
    standin.faults.fail_rate(0.05, 500)
    standin.faults.rate_limit_next(4, retry_after=1)
    for _ in range(20):
        if not runner.drain().claimed:
            break
    app.close()

    counts = store.counts()
    assert counts["pending"] == counts["leased"] == 0
    assert counts["sent"] == TOTAL - 20 and counts["dead"] == 20
    good = {f"log:{i:07d}" for i in range(TOTAL)} - set(POISON)
    assert {e.unique_id for e in standin.events} == good
    assert all(standin.received[uid] == 1 for uid in good)
    for dead in store.list(EventState.DEAD, limit=100):
        assert POISON[dead.unique_id] in (dead.last_error or "")
    assert sum(1 for r in standin.requests if r.status == 500) > 0
    assert meta.get(state_engine, meta.AUTH_FAILURE) is None
