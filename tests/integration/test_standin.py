"""The Klaviyo stand-in behaves like Klaviyo where the sender's tests rely on it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET

REVISION = "2026-07-15"
BULK = "/api/event-bulk-create-jobs"


def headers(auth: str | None = f"Klaviyo-API-Key {API_KEY}", revision: str | None = REVISION
            ) -> dict[str, str]:
    found = {"Content-Type": "application/vnd.api+json", "Accept": "application/vnd.api+json"}
    if auth is not None:
        found["Authorization"] = auth
    if revision is not None:
        found["revision"] = revision
    return found


def event_attributes(unique_id: str | None, /, metric_name: str = "Placed Order",
                     **overrides: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "metric": {"data": {"type": "metric", "attributes": {"name": metric_name}}},
        "properties": {"OrderId": unique_id, "Box": "Large"},
        "time": "2024-05-01T10:00:00+00:00",
        "value": 12.5,
        "value_currency": "EUR",
        "unique_id": unique_id,
    }
    attributes.update(overrides)
    return {k: v for k, v in attributes.items() if v is not ...}


def single(unique_id: str | None, /, email: str = "ann@example.com", **overrides: Any
           ) -> dict[str, Any]:
    attributes = event_attributes(unique_id, **overrides)
    attributes.setdefault("profile", {"data": {"type": "profile",
                                               "attributes": {"email": email}}})
    return {"data": {"type": "event", "attributes": attributes}}


def bulk(groups: list[tuple[dict[str, Any], list[dict[str, Any]]]], backfill: bool = True
         ) -> dict[str, Any]:
    """A bulk body from (profile attributes, [event attributes]) pairs."""
    data = [{"type": "event-bulk-create", "attributes": {
        "backfill": backfill,
        "profile": {"data": {"type": "profile", "attributes": profile}},
        "events": {"data": [{"type": "event", "attributes": e} for e in events]}}}
        for profile, events in groups]
    return {"data": {"type": "event-bulk-create-job",
                     "attributes": {"events-bulk-create": {"data": data}}}}


def bulk_of(count: int, prefix: str = "u", per_profile: int = 2) -> dict[str, Any]:
    groups = []
    for start in range(0, count, per_profile):
        profile = {"email": f"c{start}@example.com", "external_id": str(start)}
        events = [event_attributes(f"{prefix}{i}") for i in range(start, min(count,
                                                                              start + per_profile))]
        groups.append((profile, events))
    return bulk(groups)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def post(http: requests.Session, url: str, document: Any, **kwargs: Any) -> requests.Response:
    return http.post(url, data=json.dumps(document), headers=kwargs.pop("headers", headers()),
                     timeout=10, **kwargs)


# -- auth, revision, routing ------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "Klaviyo-API-Key pk_wrong", "Token pk_test_standin",
                                  "Bearer not-a-token"])
def test_missing_or_bad_credentials_are_refused_401(klaviyo, http, auth):
    answer = post(http, f"{klaviyo.base_url}/api/events", single("a"), headers=headers(auth))
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["code"] in ("not_authenticated", "authentication_failed")
    assert klaviyo.events == []


def test_bearer_token_works_until_it_expires(http):
    with KlaviyoStandIn(api_keys=set(), oauth_clients={"app": "secret"},
                        access_token_ttl_s=0.3, enforce_limits=False) as standin:
        token = standin.issue_oauth_tokens("app")["access_token"]
        url = f"{standin.base_url}/api/events"
        assert post(http, url, single("a"), headers=headers(f"Bearer {token}")).status_code == 202
        time.sleep(0.35)
        expired = post(http, url, single("b"), headers=headers(f"Bearer {token}"))
    assert expired.status_code == 401
    assert "expired" in expired.json()["errors"][0]["detail"]
    assert [e.unique_id for e in standin.events] == ["a"]


def refresh(http, base_url, refresh_token, auth=(OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET)):
    return http.post(f"{base_url}/oauth/token", auth=auth, timeout=10,
                     data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def test_oauth_refresh_rotates_the_refresh_token(klaviyo, http):
    first = klaviyo.issue_oauth_tokens(OAUTH_CLIENT_ID)
    answer = refresh(http, klaviyo.base_url, first["refresh_token"])
    assert answer.status_code == 200
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0
    assert tokens["refresh_token"] != first["refresh_token"]
    reused = refresh(http, klaviyo.base_url, first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert refresh(http, klaviyo.base_url, tokens["refresh_token"]).status_code == 200
    fresh = post(http, f"{klaviyo.base_url}/api/events", single("a"),
                 headers=headers(f"Bearer {tokens['access_token']}"))
    assert fresh.status_code == 202


def test_oauth_refuses_a_wrong_client_secret(klaviyo, http):
    first = klaviyo.issue_oauth_tokens(OAUTH_CLIENT_ID)
    answer = refresh(http, klaviyo.base_url, first["refresh_token"], auth=(OAUTH_CLIENT_ID, "x"))
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert refresh(http, klaviyo.base_url, first["refresh_token"]).status_code == 200


@pytest.mark.parametrize("revision", [None, "", "yesterday", "2026-7-15"])
def test_revision_header_is_required(klaviyo, http, revision):
    answer = post(http, f"{klaviyo.base_url}/api/events", single("a"),
                  headers=headers(revision=revision))
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["source"] == {"parameter": "revision"}


def test_unknown_path_is_404_and_wrong_method_405(klaviyo, http):
    assert post(http, f"{klaviyo.base_url}/api/nothing-here", {}).status_code == 404
    wrong = http.get(f"{klaviyo.base_url}{BULK}", headers=headers(), timeout=10)
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"


# -- payload validation ----------------------------------------------------------------------

NEXT_YEAR = (datetime.now(UTC) + timedelta(days=400)).isoformat()


@pytest.mark.parametrize(("overrides", "pointer"), [
    ({"profile": {"data": {"type": "profile", "attributes": {"first_name": "Ann"}}}},
     "/data/attributes/profile/data"),
    ({"time": "1989-12-31T23:00:00+00:00"}, "/data/attributes/time"),
    ({"time": NEXT_YEAR}, "/data/attributes/time"),
    ({"time": "last tuesday"}, "/data/attributes/time"),
    ({"value": "12.50"}, "/data/attributes/value"),
    ({"value_currency": "EURO"}, "/data/attributes/value_currency"),
    ({"unique_id": 17}, "/data/attributes/unique_id"),
    ({"backfill": "yes"}, "/data/attributes/backfill"),
    ({"properties": {f"p{i}": i for i in range(401)}}, "/data/attributes/properties"),
    ({"properties": ...}, "/data/attributes/properties"),
    ({"metric": {"data": {"type": "metric", "attributes": {}}}},
     "/data/attributes/metric/data/attributes/name"),
    ({"metric": {"data": {"type": "metric", "attributes": {"name": "x" * 128}}}},
     "/data/attributes/metric/data/attributes/name"),
])
def test_invalid_single_event_is_400_with_a_pointer(klaviyo, http, overrides, pointer):
    answer = post(http, f"{klaviyo.base_url}/api/events", single("a", **overrides))
    assert answer.status_code == 400
    error = answer.json()["errors"][0]
    assert error["code"] == "invalid" and error["title"] and error["detail"]
    assert error["source"]["pointer"] == pointer
    assert klaviyo.events == [] and klaviyo.received == {}


def test_invalid_event_in_bulk_points_at_it_and_nothing_is_recorded(klaviyo, http):
    document = bulk_of(10)
    bad = document["data"]["attributes"]["events-bulk-create"]["data"][3]
    bad["attributes"]["events"]["data"][1]["attributes"]["value_currency"] = "euros"
    answer = post(http, f"{klaviyo.base_url}{BULK}", document)
    assert answer.status_code == 400
    pointer = answer.json()["errors"][0]["source"]["pointer"]
    assert pointer == ("/data/attributes/events-bulk-create/data/3/attributes/events/data/1"
                       "/attributes/value_currency")
    assert klaviyo.events == []


def test_bulk_over_1000_events_is_400_and_over_5_mb_is_413(klaviyo, http):
    assert post(http, f"{klaviyo.base_url}{BULK}", bulk_of(1001)).status_code == 400
    huge = bulk_of(2)
    first = huge["data"]["attributes"]["events-bulk-create"]["data"][0]
    first["attributes"]["events"]["data"][0]["attributes"]["properties"] = {
        f"p{i}": "x" * 60_000 for i in range(90)}
    assert post(http, f"{klaviyo.base_url}{BULK}", huge).status_code == 413
    assert klaviyo.events == []


def test_bulk_accepts_1000_events_grouped_per_profile(klaviyo, http):
    answer = post(http, f"{klaviyo.base_url}{BULK}", bulk_of(1000))
    assert answer.status_code == 202
    assert answer.json()["data"]["type"] == "event-bulk-create-job"
    events = klaviyo.events
    assert len(events) == 1000
    assert events[3].profile == {"email": "c2@example.com", "external_id": "2"}
    assert events[3].backfill is True and events[3].value == 12.5
    assert events[3].time == datetime(2024, 5, 1, 10, tzinfo=UTC)


# -- deduplication ---------------------------------------------------------------------------


def test_single_endpoint_drops_a_repeat_silently(klaviyo, http):
    url = f"{klaviyo.base_url}/api/events"
    assert post(http, url, single("a")).status_code == 202
    assert post(http, url, single("a")).status_code == 202
    assert post(http, url, single("a", metric_name="Cancelled Order")).status_code == 202
    assert post(http, url, single("a", email="bob@example.com")).status_code == 202
    assert len(klaviyo.events) == 3
    assert klaviyo.received["a"] == 4


def test_without_unique_id_events_dedupe_on_the_second(klaviyo, http):
    url = f"{klaviyo.base_url}/api/events"
    for moment in ("2024-05-01T10:00:00.100+00:00", "2024-05-01T10:00:00.900+00:00",
                   "2024-05-01T10:00:01+00:00"):
        assert post(http, url, single(None, unique_id=..., time=moment)).status_code == 202
    assert len(klaviyo.events) == 2


def test_bulk_repeating_a_unique_id_is_refused_whole(klaviyo, http):
    document = bulk([({"email": "ann@example.com"}, [event_attributes("x1")]),
                     ({"email": "bob@example.com"}, [event_attributes("x1")]),
                     ({"email": "ann@example.com"}, [event_attributes("x2"),
                                                     event_attributes("x1")])])
    answer = post(http, f"{klaviyo.base_url}{BULK}", document)
    assert answer.status_code == 400
    error = answer.json()["errors"][0]
    assert error["code"] == "duplicate_unique_id"
    assert error["source"]["pointer"].endswith("/data/2/attributes/events/data/1")
    assert klaviyo.events == [] and klaviyo.received == {}


@pytest.mark.parametrize("refuses", [True, False])
def test_bulk_resent_after_recording_is_refused_or_dropped_as_configured(http, refuses):
    with KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False,
                        bulk_refuses_known_unique_ids=refuses) as standin:
        url = f"{standin.base_url}{BULK}"
        assert post(http, url, bulk_of(4)).status_code == 202
        again = post(http, url, bulk_of(6))
    assert again.status_code == (400 if refuses else 202)
    if refuses:
        assert "already exists" in again.json()["errors"][0]["detail"]
        assert again.json()["errors"][0]["source"]["pointer"].endswith("/data/0")
    assert len(standin.events) == (4 if refuses else 6)
    assert standin.received["u0"] == (1 if refuses else 2)


# -- rate limits -----------------------------------------------------------------------------


class ManualClock:
    """A monotonic clock the test moves by hand, to step through rate-limit windows."""

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


def test_burst_and_steady_windows_answer_429_with_retry_after(http):
    moment = ManualClock(1200.0)  # the start of a 6 s steady window at window_scale 0.1
    with KlaviyoStandIn(api_keys={API_KEY}, limits={"bulk_events": (2, 5)}, window_scale=0.1,
                        monotonic=moment) as standin:
        url = f"{standin.base_url}{BULK}"
        answers = []
        for index in range(3):  # three burst windows of 100 ms, three requests in each
            for attempt in range(3):
                answers.append(post(http, url, bulk_of(1, prefix=f"r{index}-{attempt}-")))
            moment.now_s += 0.1
        moment.now_s = 1206.0  # the next steady window
        later = post(http, url, bulk_of(1, prefix="later-"))
    assert later.status_code == 202 and later.headers["RateLimit-Remaining"] == "4"
    statuses = [a.status_code for a in answers]
    assert statuses == [202, 202, 429, 202, 202, 429, 202, 429, 429]
    burst, steady = answers[2], answers[7]
    assert burst.json()["errors"][0]["code"] == "throttled"
    assert burst.headers["Retry-After"] == "1"  # whole seconds, never 0
    assert steady.headers["Retry-After"] == "6"  # 5.8 s until the steady window ends
    assert steady.headers["RateLimit-Remaining"] == "0"
    accepted = [a for a in answers if a.status_code == 202]
    assert [a.headers["RateLimit-Remaining"] for a in accepted] == ["4", "3", "2", "1", "0"]
    assert {a.headers["RateLimit-Limit"] for a in accepted} == {"5"}
    assert {a.headers["RateLimit-Reset"] for a in accepted} == {"6"}
    assert len(standin.events) == 6
    assert sum(r.status == 429 for r in standin.requests) == 4


def test_limits_hold_on_the_real_clock(http):
    with KlaviyoStandIn(api_keys={API_KEY}, limits={"events": (5, 1000)}) as standin:
        url = f"{standin.base_url}/api/events"
        statuses = [post(http, url, single(f"u{i}")).status_code for i in range(12)]
    # Twelve quick requests fall in one or two 1 s windows of 5.
    assert 5 <= statuses.count(202) <= 10
    assert statuses.count(429) == 12 - statuses.count(202)


def test_oauth_apps_have_their_own_quota(http):
    with KlaviyoStandIn(api_keys={API_KEY}, limits={"events": (1, 10)},
                        oauth_clients={"app": "secret"}) as standin:
        token = standin.issue_oauth_tokens("app")["access_token"]
        url = f"{standin.base_url}/api/events"
        assert post(http, url, single("a")).status_code == 202
        assert post(http, url, single("b"),
                    headers=headers(f"Bearer {token}")).status_code == 202


def test_without_limits_there_are_no_429s_and_no_ratelimit_headers(klaviyo, http):
    url = f"{klaviyo.base_url}/api/events"
    answers = [post(http, url, single(f"u{i}")) for i in range(20)]
    assert {a.status_code for a in answers} == {202}
    assert "RateLimit-Limit" not in answers[0].headers


# -- faults ----------------------------------------------------------------------------------


def test_fail_rate_answers_500_to_a_share_of_requests_and_records_nothing_for_them(http):
    with KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False, seed=7) as standin:
        standin.faults.fail_rate(0.3, status=500)
        url = f"{standin.base_url}/api/events"
        answers = {f"u{i}": post(http, url, single(f"u{i}")).status_code for i in range(60)}
    failed = {uid for uid, status in answers.items() if status == 500}
    assert 5 <= len(failed) <= 35
    assert set(answers.values()) == {202, 500}
    assert {e.unique_id for e in standin.events} == set(answers) - failed


def test_fail_next_answers_the_given_status_then_recovers(klaviyo, http):
    klaviyo.faults.fail_next(2, status=503)
    url = f"{klaviyo.base_url}/api/events"
    statuses = [post(http, url, single(f"u{i}")).status_code for i in range(3)]
    assert statuses == [503, 503, 202]
    assert [e.unique_id for e in klaviyo.events] == ["u2"]


def test_fail_after_processing_records_the_events_but_answers_an_error(klaviyo, http):
    klaviyo.faults.fail_next(1, status=500, after_processing=True)
    assert post(http, f"{klaviyo.base_url}{BULK}", bulk_of(3)).status_code == 500
    assert len(klaviyo.events) == 3


def test_rejected_unique_ids_make_the_bulk_request_400_pointing_at_the_event(klaviyo, http):
    klaviyo.faults.reject_unique_ids({"u5": "Poison event: the property Box is invalid."})
    answer = post(http, f"{klaviyo.base_url}{BULK}", bulk_of(8))
    assert answer.status_code == 400
    error = answer.json()["errors"][0]
    assert error["detail"] == "Poison event: the property Box is invalid."
    assert error["source"]["pointer"] == \
        "/data/attributes/events-bulk-create/data/2/attributes/events/data/1"
    single_answer = post(http, f"{klaviyo.base_url}/api/events", single("u5"))
    assert single_answer.status_code == 400
    assert post(http, f"{klaviyo.base_url}/api/events", single("u6")).status_code == 202
    assert [e.unique_id for e in klaviyo.events] == ["u6"]


def test_auth_failing_refuses_everything_until_turned_off(klaviyo, http):
    url = f"{klaviyo.base_url}/api/events"
    klaviyo.faults.auth_failing(True)
    refused = post(http, url, single("a"))
    assert refused.status_code == 401 and refused.json()["errors"][0]["detail"]
    klaviyo.faults.auth_failing(False)
    assert post(http, url, single("b")).status_code == 202
    assert [e.unique_id for e in klaviyo.events] == ["b"]


def test_rate_limit_next_forces_429s_with_retry_after(klaviyo, http):
    klaviyo.faults.rate_limit_next(2, retry_after=3)
    url = f"{klaviyo.base_url}/api/events"
    answers = [post(http, url, single(f"u{i}")) for i in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 202]
    assert answers[0].headers["Retry-After"] == "3"


@pytest.mark.parametrize("after_processing", [False, True])
def test_dropped_connection_gives_no_answer(klaviyo, http, after_processing):
    klaviyo.faults.drop_next(1, after_processing=after_processing)
    with pytest.raises(requests.ConnectionError):
        post(http, f"{klaviyo.base_url}{BULK}", bulk_of(2))
    assert len(klaviyo.events) == (2 if after_processing else 0)
    assert post(http, f"{klaviyo.base_url}{BULK}", bulk_of(2)).status_code in (202, 400)
    assert klaviyo.requests[0].status == 0


def test_a_stopped_standin_hangs_up_on_kept_alive_connections(http):
    standin = KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False)
    url = f"{standin.start()}/api/events"
    assert post(http, url, single("a")).status_code == 202  # the session keeps it alive
    standin.stop()
    with pytest.raises(requests.ConnectionError):
        post(http, url, single("b"))


def test_a_bug_in_the_standin_is_a_500_that_says_so(http, monkeypatch):
    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    with KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False) as standin:
        monkeypatch.setattr(standin._dispatcher, "dispatch", broken)
        answer = post(http, f"{standin.base_url}/api/events", single("a"))
    assert answer.status_code == 500
    assert answer.json()["errors"][0]["code"] == "standin_bug"
    assert "RuntimeError: boom" in standin.internal_errors[0]


def test_it_keeps_its_own_clock_while_a_test_freezes_time(http):
    from freezegun import freeze_time

    with KlaviyoStandIn(api_keys={API_KEY}, limits={"events": (1, 100)},
                        window_scale=0.1) as standin, freeze_time("2021-03-04 05:06:07"):
        url = f"{standin.base_url}/api/events"
        first = post(http, url, single("a", time=...))
        refused = post(http, url, single("b", time=...))
        time.sleep(0.11)  # real time moves on; the burst window must too
        later = post(http, url, single("c", time=...))
    assert [first.status_code, refused.status_code, later.status_code] == [202, 429, 202]
    assert standin.events[0].time.year > 2021  # stamped with the real time


def test_latency_slows_every_answer(klaviyo, http):
    klaviyo.latency_s = 0.2
    started = time.monotonic()
    assert post(http, f"{klaviyo.base_url}/api/events", single("a")).status_code == 202
    assert time.monotonic() - started >= 0.2
    assert klaviyo.requests[-1].duration_s >= 0.2


# -- profiles and suppression ---------------------------------------------------------------


def suppression(kind: str, emails: list[str]) -> dict[str, Any]:
    return {"data": {"type": f"profile-suppression-bulk-{kind}-job", "attributes": {
        "profiles": {"data": [{"type": "profile", "attributes": {"email": e}} for e in emails]}}}}


def test_suppress_and_unsuppress_jobs(klaviyo, http):
    url = f"{klaviyo.base_url}/api/profile-suppression-bulk-create-jobs"
    answer = post(http, url, suppression("create", ["a@example.com", "b@example.com"]))
    assert answer.status_code == 202
    job = answer.json()["data"]
    assert job["type"] == "profile-suppression-bulk-create-job"
    status = http.get(f"{url}/{job['id']}/", headers=headers(), timeout=10)
    assert status.json()["data"]["attributes"]["status"] == "complete"
    assert set(klaviyo.suppressed) == {"a@example.com", "b@example.com"}
    delete_url = f"{klaviyo.base_url}/api/profile-suppression-bulk-delete-jobs"
    assert post(http, delete_url, suppression("delete", ["a@example.com"])).status_code == 202
    assert set(klaviyo.suppressed) == {"b@example.com"}
    assert set(klaviyo.unsuppressed) == {"a@example.com"}
    assert klaviyo.suppression_requests == [["a@example.com", "b@example.com"]]
    too_many = [f"p{i}@example.com" for i in range(101)]
    assert post(http, url, suppression("create", too_many)).status_code == 400
    assert post(http, url, suppression("create", ["not-an-email"])).status_code == 400


def test_profile_import_creates_then_updates(klaviyo, http):
    url = f"{klaviyo.base_url}/api/profile-import"

    def profile(**attributes: Any) -> dict[str, Any]:
        return {"data": {"type": "profile", "attributes": attributes}}

    created = post(http, url, profile(email="ann@example.com", properties={"Box": "L"}))
    assert created.status_code == 201
    updated = post(http, url, profile(email="ann@example.com", first_name="Ann",
                                      properties={"Status": "Active"}))
    assert updated.status_code == 200
    assert updated.json()["data"]["id"] == created.json()["data"]["id"]
    assert klaviyo.profiles["ann@example.com"]["properties"] == {"Box": "L", "Status": "Active"}
    cleared = post(http, url, profile(email="ann@example.com", first_name=None))
    assert cleared.status_code == 200
    assert klaviyo.profiles["ann@example.com"]["first_name"] is None
    assert post(http, url, profile(first_name="Nobody")).status_code == 400
    assert post(http, url, profile(email="big@example.com",
                                   properties={"x": "y" * 110_000})).status_code == 413


# -- read endpoints --------------------------------------------------------------------------


def follow(http: requests.Session, url: str, **params: str) -> list[dict[str, Any]]:
    pages = []
    answer = http.get(url, params=params, headers=headers(), timeout=10)
    while True:
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        next_url = answer.json()["links"].get("next")
        if not next_url:
            return pages
        answer = http.get(next_url, headers=headers(), timeout=10)


def test_metrics_are_paginated_200_at_a_time(klaviyo, http):
    ids = [klaviyo.add_metric(f"Metric {i}") for i in range(230)]
    assert klaviyo.add_metric("Metric 3") == ids[3]
    pages = follow(http, f"{klaviyo.base_url}/api/metrics")
    assert [len(page["data"]) for page in pages] == [200, 30]
    assert [m["id"] for page in pages for m in page["data"]] == ids
    refused = http.get(f"{klaviyo.base_url}/api/metrics", headers=headers(), timeout=10,
                       params={"filter": 'equals(name,"Metric 3")'})
    assert refused.status_code == 400


def test_events_filtered_by_metric_and_time_are_paginated_with_profiles(klaviyo, http):
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(450):
        klaviyo.add_event("Started Checkout", f"p{i}@example.com", start + timedelta(hours=i),
                          {"Items": i}, external_id=f"c{i}" if i % 2 else None)
    klaviyo.add_event("Viewed Product", "p0@example.com", start, {})
    metric_id = klaviyo.add_metric("Started Checkout")
    since, until = start + timedelta(hours=100), start + timedelta(hours=400)
    query = (f'and(equals(metric_id,"{metric_id}"),greater-or-equal(datetime,'
             f'{since.isoformat()}),less-than(datetime,{until.isoformat()}))')
    pages = follow(http, f"{klaviyo.base_url}/api/events", filter=query, include="profile")
    assert [len(page["data"]) for page in pages] == [200, 100]
    events = [event for page in pages for event in page["data"]]
    assert [e["attributes"]["event_properties"]["Items"] for e in events] == \
        list(range(100, 400))
    emails = {p["id"]: p["attributes"]["email"] for page in pages for p in page["included"]}
    first = events[0]
    assert emails[first["relationships"]["profile"]["data"]["id"]] == "p100@example.com"
    assert first["attributes"]["datetime"] == since.isoformat()
    small = follow(http, f"{klaviyo.base_url}/api/events",
                   filter=f"equals(metric_id,'{metric_id}')", **{"page[size]": "1000"})
    assert len(small) == 1 and len(small[0]["data"]) == 450


@pytest.mark.parametrize("bad", ["equals(email,'a@example.com')", "contains(metric_id,'x')",
                                 "greater-than(datetime,yesterday)", "nonsense"])
def test_unsupported_event_filters_are_400(klaviyo, http, bad):
    answer = http.get(f"{klaviyo.base_url}/api/events", params={"filter": bad},
                      headers=headers(), timeout=10)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["source"] == {"parameter": "filter"}


# -- the fast path agrees with the schema ----------------------------------------------------

_ODD_VALUES = [None, 0, 1.5, True, "", "x", "a@b.co", "+15005550006", "EUR", [], {},
               "y" * 128, "2024-05-01", "2024-05-01T10:00:00Z", "1989-06-01T00:00:00+00:00",
               {"data": {}}, {f"k{i}": i for i in range(401)}]
_MISSING = object()


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index path inside a JSON document."""
    children = document.items() if isinstance(document, dict) else (
        enumerate(document) if isinstance(document, list) else ())
    for key, value in children:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _mutated(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(document))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if value is _MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


@pytest.mark.parametrize("kind", ["single", "bulk"])
def test_fast_check_gives_the_schemas_verdict_on_every_mutation(kind):
    from tests.klaviyo_standin import fastcheck, schemas

    if kind == "single":
        base = single("a", email="ann@example.com", backfill=True)
        base["data"]["attributes"]["profile"]["data"]["attributes"].update(
            {"external_id": "7", "phone_number": "+15005550006", "first_name": "Ann",
             "properties": {"Box": "L"}, "location": {"city": "Paris"}})
        fast, validator = fastcheck.event_create_ok, schemas.EVENT_CREATE_VALIDATOR
    else:
        base = bulk([({"email": "ann@example.com", "external_id": "7", "first_name": "Ann",
                       "properties": {"Box": "L"}}, [event_attributes("a", backfill=False)])])
        base["data"]["attributes"]["events-bulk-create"]["data"][0]["id"] = "profile-id"
        fast, validator = fastcheck.event_bulk_create_ok, schemas.EVENT_BULK_CREATE_VALIDATOR
    assert fast(base) and not list(validator.errors(base))
    checked = 0
    for path in list(_paths(base)):
        for value in [_MISSING, *_ODD_VALUES]:
            document = _mutated(base, path, value)
            schema_ok = not list(validator.errors(document))
            assert fast(document) == schema_ok, (path, value)
            checked += 1
    assert checked > 500


# -- concurrency, process of its own ---------------------------------------------------------


def test_concurrent_senders_of_the_same_events_record_each_once():
    with KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False,
                        bulk_refuses_known_unique_ids=False) as standin:
        bodies = [json.dumps(bulk_of(100, prefix=f"b{i}-")) for i in range(5)]

        def send_all() -> list[int]:
            with requests.Session() as session:
                return [session.post(f"{standin.base_url}{BULK}", data=body, headers=headers(),
                                     timeout=10).status_code for body in bodies]

        threads = [ThreadWithResult(send_all) for _ in range(4)]
        for thread in threads:
            thread.start()
        results = [thread.join_result() for thread in threads]
    assert all(statuses == [202] * 5 for statuses in results)
    assert len(standin.events) == 500
    assert len({e.event_id for e in standin.events}) == 500
    assert set(standin.received.values()) == {4}
    assert standin.stats()["received_more_than_once"] == 500


class ThreadWithResult(threading.Thread):
    def __init__(self, target: Any) -> None:
        super().__init__(daemon=True)
        self._target_fn, self._result = target, None

    def run(self) -> None:
        self._result = self._target_fn()

    def join_result(self) -> Any:
        self.join(timeout=30)
        return self._result


def test_runs_as_a_process_of_its_own_and_reports_its_counts(http):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.klaviyo_standin", "--no-limits"],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert post(http, f"{base_url}{BULK}", bulk_of(10)).status_code == 202
        live = http.get(f"{base_url}/_standin/stats", timeout=10).json()
        assert live["events"] == 10 and live["requests"] == {"202": 1}
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    assert process.returncode == 0
    assert json.loads(out.strip().splitlines()[-1])["events"] == 10
