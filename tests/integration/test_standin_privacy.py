"""The stand-in erases a person on a data-privacy deletion job, as the forget feature expects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY

DELETE = "/api/data-privacy-deletion-jobs"
HEADERS = {"Content-Type": "application/vnd.api+json", "Accept": "application/vnd.api+json",
           "Authorization": f"Klaviyo-API-Key {API_KEY}", "revision": "2026-07-15"}
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def post(http: requests.Session, url: str, document: Any) -> requests.Response:
    return http.post(url, data=json.dumps(document), headers=HEADERS, timeout=10)


def deletion(profile_id: str | None = None, **attributes: str) -> dict[str, Any]:
    profile: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if profile_id is not None:
        profile["id"] = profile_id
    return {"data": {"type": "data-privacy-deletion-job",
                     "attributes": {"profile": {"data": profile}}}}


def test_deleting_by_email_erases_the_profile_its_events_and_consent(klaviyo, http):
    for minute in range(50):
        klaviyo.add_event("Placed Order", "ann@example.com", T0 + timedelta(minutes=minute))
    klaviyo.add_event("Placed Order", "bo@example.com", T0)
    klaviyo.account.opt_out("ann@example.com")
    post(http, f"{klaviyo.base_url}/api/profile-suppression-bulk-create-jobs", {"data": {
        "type": "profile-suppression-bulk-create-job", "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "ann@example.com"}}]}}}})
    post(http, f"{klaviyo.base_url}/api/profile-import", {"data": {"type": "profile",
                                                                   "attributes": {
        "email": "ann@example.com", "first_name": "Ann"}}})
    answer = post(http, klaviyo.base_url + DELETE, deletion(email="Ann@Example.com"))
    assert answer.status_code == 202 and answer.content == b""
    [request] = klaviyo.deletion_requests
    assert (request.kind, request.value, request.events_deleted) == (
        "email", "Ann@Example.com", 50)
    assert len(request.profile_ids) == 1
    assert [e.profile["email"] for e in klaviyo.events] == ["bo@example.com"]
    assert "ann@example.com" not in klaviyo.profiles
    assert "ann@example.com" not in klaviyo.suppressed
    assert klaviyo.email_consent("ann@example.com") is None
    listed = http.get(f"{klaviyo.base_url}/api/profiles", headers=HEADERS, timeout=10).json()
    assert [p["attributes"]["email"] for p in listed["data"]] == ["bo@example.com"]
    # Events sent again afterwards make a new profile, as they would in Klaviyo.
    klaviyo.add_event("Placed Order", "ann@example.com", T0)
    assert klaviyo.account.profile_id_for("email", "ann@example.com") not in request.profile_ids


def test_deleting_by_phone_or_id_and_an_unknown_person(klaviyo, http):
    event = klaviyo.add_event("Placed Order", "ann@example.com", T0)
    url = klaviyo.base_url + DELETE
    assert post(http, url, deletion(phone_number="+15005550006")).status_code == 202
    assert post(http, url, deletion(event.profile_id)).status_code == 202
    unknown, by_id = klaviyo.deletion_requests
    assert unknown.profile_ids == () and unknown.kind == "phone_number"
    assert by_id.profile_ids == (event.profile_id,) and by_id.events_deleted == 1
    assert klaviyo.events == []


@pytest.mark.parametrize(("body", "pointer"), [
    (deletion(), "/data/attributes/profile/data"),
    (deletion("01ABC", email="ann@example.com"), "/data/attributes/profile/data"),
    (deletion(email="ann@example.com", phone_number="+15005550006"),
     "/data/attributes/profile/data"),
    (deletion(email="not-an-email"), "/data/attributes/profile/data/attributes/email"),
    (deletion(phone_number="5550006"), "/data/attributes/profile/data/attributes/phone_number"),
    ({"data": {"type": "data-privacy-deletion-job", "attributes": {}}},
     "/data/attributes/profile"),
])
def test_a_deletion_needs_exactly_one_valid_identifier(klaviyo, http, body, pointer):
    klaviyo.add_event("Placed Order", "ann@example.com", T0)
    answer = post(http, klaviyo.base_url + DELETE, body)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["source"]["pointer"] == pointer
    assert klaviyo.deletion_requests == [] and len(klaviyo.events) == 1


def test_deletions_are_limited_to_three_a_second(http):
    with KlaviyoStandIn(api_keys={API_KEY}, monotonic=lambda: 1200.5) as standin:
        statuses = [post(http, standin.base_url + DELETE,
                         deletion(email=f"p{i}@example.com")).status_code for i in range(4)]
    assert statuses == [202, 202, 202, 429]
    assert len(standin.deletion_requests) == 3
