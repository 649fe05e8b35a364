"""The runner against the Klaviyo stand-in, on SQLite and PostgreSQL state databases."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from klaviyo_sync.app import App
from klaviyo_sync.business.customers import Customer, InMemoryCustomers
from klaviyo_sync.config import KlaviyoSettings, SenderSettings, Settings, StateSettings
from klaviyo_sync.queue import EventState, NewEvent, QueueStore
from klaviyo_sync.senders.audit import list_audit, prune_audit
from klaviyo_sync.senders.runner import prune
from klaviyo_sync.state import meta
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY


def send_settings(base_url: str, state_url: str = "sqlite://", **sender: Any) -> Settings:
    klaviyo_kw = {k: sender.pop(k) for k in ("generate_events", "auth", "oauth_token_url")
                  if k in sender}
    sender_kw: dict[str, Any] = dict(backoff_base_s=0.0, backoff_max_s=0.0, concurrency=2)
    sender_kw.update(sender)
    return Settings(state=StateSettings(url=state_url),
                    klaviyo=KlaviyoSettings(base_url=base_url, respect_published_limits=False,
                                            timeout_s=10.0, **klaviyo_kw),
                    sender=SenderSettings(**sender_kw))


def make_events(n: int, customers: int = 50, start: datetime = datetime(2024, 3, 1, 9),
                **kw: Any) -> list[NewEvent]:
    return [NewEvent(unique_id=f"log:{i:07d}", metric="started.signup", source="log",
                     occurred_at=start + timedelta(seconds=i),
                     properties={"n": i}, customer_id=str(i % customers),
                     email=f"cust{i % customers}@example.com",
                     profile={"first_name": "Logged"}, value=47.95 if i % 2 else None, **kw)
            for i in range(n)]


def directory(customers: int = 50) -> InMemoryCustomers:
    return InMemoryCustomers(
        Customer(id=str(i), email=f"cust{i}@example.com", first_name=f"First{i}",
                 last_name="Now", status="Active", schedule="weekly", box=f"box-{i}",
                 signup_date=date(2020, 1, 2), email_opt_in=True) for i in range(customers))


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)


def test_every_event_recorded_once_with_current_customer_data(
        standin: KlaviyoStandIn, state_engine: sa.Engine, api_key: None) -> None:
    QueueStore(state_engine).enqueue_many(make_events(2500))
    customers = directory()
    app = App(send_settings(standin.base_url, batch_max_events=300, claim_batch=500),
              state_engine=state_engine, customers=customers, suppression=None)
    report = app.runner.drain()
    app.close()
    assert report.sent == 2500 and report.dead == 0
    assert len(standin.events) == 2500 and set(standin.received.values()) == {1}
    assert QueueStore(state_engine).counts()["sent"] == 2500
    assert customers.queries == report.batches == 5  # one look-up per batch
    event = next(e for e in standin.events if e.unique_id == "log:0000007")
    assert event.profile["external_id"] == "7" and event.profile["first_name"] == "First7"
    assert event.profile["properties"] == {"Schedule": "weekly", "Status": "Active",
                                           "Box": "box-7", "SignUpDate": "2020-01-02"}
    assert event.time.isoformat().startswith("2024-03-01T09:00:07")
    assert event.value == 47.95 and event.value_currency == "USD"
    assert meta.get(state_engine, meta.LAST_SEND_OK_AT)
    rows = list_audit(state_engine, limit=1000)
    assert sum(r.items for r in rows) == 2500 and {r.status_code for r in rows} == {202}
    assert prune_audit(state_engine, timedelta(0), now=datetime.now() + timedelta(days=1))


def test_unknown_customer_goes_with_the_log_data_and_no_identifier_is_dead(
        standin: KlaviyoStandIn, state_engine: sa.Engine, api_key: None) -> None:
    store = QueueStore(state_engine)
    store.enqueue_many([
        NewEvent("a", "cancelled", "log", datetime(2024, 1, 1), {}, customer_id="999",
                 email="who@example.com", profile={"first_name": "Log"}),
        NewEvent("b", "cancelled", "log", datetime(2024, 1, 1), {}, email="only@example.com"),
        NewEvent("c", "cancelled", "log", datetime(2024, 1, 1), {}),
    ])
    runner = App(send_settings(standin.base_url), state_engine=state_engine,
                 customers=directory(), suppression=None).runner
    report = runner.drain()
    assert report.sent == 2 and report.dead == 1
    by_uid = {e.unique_id: e for e in standin.events}
    assert by_uid["a"].profile == {"email": "who@example.com", "external_id": "999",
                                   "first_name": "Log"}
    assert by_uid["b"].profile == {"email": "only@example.com"}
    (dead,) = store.list(EventState.DEAD)
    assert dead.unique_id == "c" and "no email and no customer id" in (dead.last_error or "")


def test_generate_events_false_sends_profile_updates_only(
        standin: KlaviyoStandIn, state_engine: sa.Engine, api_key: None) -> None:
    QueueStore(state_engine).enqueue_many(make_events(40, customers=4))
    runner = App(send_settings(standin.base_url, generate_events=False),
                 state_engine=state_engine, customers=directory(4), suppression=None).runner
    report = runner.drain()
    assert report.sent == 40 and not standin.events
    assert len(standin.profiles) == 4
    assert standin.profiles["cust1@example.com"]["properties"]["Box"] == "box-1"


def test_refused_credentials_stop_the_pass_and_spend_no_attempt(
        standin: KlaviyoStandIn, state_engine: sa.Engine, api_key: None) -> None:
    store = QueueStore(state_engine)
    store.enqueue_many(make_events(300))
    standin.faults.auth_failing(True)
    settings = send_settings(standin.base_url, claim_batch=100, batch_max_events=100,
                             concurrency=1)
    runner = App(settings, state_engine=state_engine, customers=directory(),
                 suppression=None).runner
    report = runner.drain()
    assert report.auth_error and report.sent == 0 and len(standin.requests) == 1
    assert store.counts()["pending"] == 300
    assert {e.attempts for e in store.list(limit=1000)} == {0}
    assert meta.get_json(state_engine, meta.AUTH_FAILURE)["status"] == 401
    standin.faults.auth_failing(False)
    report = runner.drain()
    assert report.sent == 300 and meta.get(state_engine, meta.AUTH_FAILURE) is None


def test_dry_run_writes_the_exact_bodies(state_engine: sa.Engine, tmp_path: Path) -> None:
    QueueStore(state_engine).enqueue_many(make_events(120))
    outbox = tmp_path / "out" / "outbox.jsonl"
    settings = send_settings("https://a.klaviyo.com", kind="dry-run", outbox=str(outbox),
                             batch_max_events=50)
    app = App(settings, state_engine=state_engine, customers=directory(), suppression=None)
    report = app.runner.drain()
    app.close()
    lines = [json.loads(line) for line in outbox.read_text().splitlines()]
    assert report.sent == 120 and {x["path"] for x in lines} == {"/api/event-bulk-create-jobs"}
    uids = [ev["attributes"]["unique_id"] for x in lines
            for entry in x["body"]["data"]["attributes"]["events-bulk-create"]["data"]
            for ev in entry["attributes"]["events"]["data"]]
    assert sorted(uids) == sorted(f"log:{i:07d}" for i in range(120))


def test_oauth_bearer_with_rotation_against_the_standin(
        standin: KlaviyoStandIn, state_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    first = standin.issue_oauth_tokens("client-id")
    monkeypatch.setenv("KLAVIYO_OAUTH_CLIENT_ID", "client-id")
    monkeypatch.setenv("KLAVIYO_OAUTH_CLIENT_SECRET", "client-secret")
    monkeypatch.setenv("KLAVIYO_OAUTH_REFRESH_TOKEN", str(first["refresh_token"]))
    QueueStore(state_engine).enqueue_many(make_events(30))
    settings = send_settings(standin.base_url, auth="oauth")
    app = App(settings, state_engine=state_engine, customers=directory(), suppression=None)
    runner = app.runner
    assert runner.drain().sent == 30
    standin.oauth.expire_access_tokens()  # the next request meets a 401 and refreshes once
    QueueStore(state_engine).enqueue_many(make_events(60)[30:])
    assert runner.drain().sent == 30
    stored = meta.get(state_engine, meta.OAUTH_REFRESH_TOKEN) or ""
    assert str(first["refresh_token"]) not in stored
    app.close()


def test_prune_removes_old_sent_events_and_audit_rows(
        standin: KlaviyoStandIn, state_engine: sa.Engine, api_key: None) -> None:
    QueueStore(state_engine).enqueue_many(make_events(10))
    settings = send_settings(standin.base_url, sent_retention="0s", audit_retention="0s")
    App(settings, state_engine=state_engine, customers=directory(),
        suppression=None).runner.drain()
    result = prune(settings, state_engine)
    assert result == {"sent_events": 10, "audit_rows": len(standin.requests)}
