"""The stand-in's subscription jobs behave like Klaviyo's where the consent feature relies on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.consent import SUPPRESSION_JOB_METHOD_DETAIL
from tests.klaviyo_standin.fixtures import API_KEY

REVISION = "2026-07-15"
SUBSCRIBE = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"
PAST = "2023-03-01T09:30:00+00:00"


def headers(**overrides: str) -> dict[str, str]:
    found = {"Content-Type": "application/vnd.api+json", "Accept": "application/vnd.api+json",
             "Authorization": f"Klaviyo-API-Key {API_KEY}", "revision": REVISION}
    found.update(overrides)
    return {k: v for k, v in found.items() if v}


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def post(http: requests.Session, url: str, document: Any, **kwargs: Any) -> requests.Response:
    return http.post(url, data=json.dumps(document), headers=kwargs.pop("headers", headers()),
                     timeout=10, **kwargs)


def person(email: str | None = "ann@example.com", consented_at: str | None = None,
           phone: str | None = None, sms: bool = False) -> dict[str, Any]:
    subscriptions: dict[str, Any] = {}
    if email is not None:
        marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
        if consented_at is not None:
            marketing["consented_at"] = consented_at
        subscriptions["email"] = {"marketing": marketing}
    if sms:
        subscriptions["sms"] = {"marketing": {"consent": "SUBSCRIBED"}}
    attributes: dict[str, Any] = {"subscriptions": subscriptions}
    if email is not None:
        attributes["email"] = email
    if phone is not None:
        attributes["phone_number"] = phone
    return {"type": "profile", "attributes": attributes}


def subscription(profiles: list[dict[str, Any]], historical: bool | None = None,
                 list_id: str | None = None, source: str | None = "klaviyo-sync"
                 ) -> dict[str, Any]:
    attributes: dict[str, Any] = {"profiles": {"data": profiles}}
    if source is not None:
        attributes["custom_source"] = source
    if historical is not None:
        attributes["historical_import"] = historical
    data: dict[str, Any] = {"type": "profile-subscription-bulk-create-job",
                            "attributes": attributes}
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def test_a_historical_subscription_records_consent_and_sends_nothing(klaviyo, http):
    klaviyo.account.add_list("Lst1", "Newsletter", double_opt_in=True)
    body = subscription([person("ann@example.com", PAST), person("bo@example.com", PAST)],
                        historical=True, list_id="Lst1")
    answer = post(http, klaviyo.base_url + SUBSCRIBE, body)
    assert answer.status_code == 202 and answer.content == b""
    first, second = klaviyo.subscriptions
    assert (first.email, first.consent, first.historical_import, first.list_id,
            first.custom_source, first.outcome) == (
        "ann@example.com", "SUBSCRIBED", True, "Lst1", "klaviyo-sync", "subscribed")
    assert first.consented_at == datetime(2023, 3, 1, 9, 30, tzinfo=UTC)
    assert second.email == "bo@example.com"
    assert klaviyo.confirmations_sent == [] and klaviyo.flows_fired == []
    consent = klaviyo.email_consent("ann@example.com")
    assert consent["consent"] == "SUBSCRIBED"
    assert consent["consent_timestamp"] == "2023-03-01T09:30:00+00:00"
    assert consent["custom_method_detail"] == "klaviyo-sync"


def test_a_live_subscription_to_a_double_opt_in_list_sends_a_confirmation(klaviyo, http):
    klaviyo.account.add_list("Dbl", "Double", double_opt_in=True)
    klaviyo.account.add_list("One", "Single", double_opt_in=False)
    assert post(http, klaviyo.base_url + SUBSCRIBE,
                subscription([person("ann@example.com")], list_id="Dbl")).status_code == 202
    assert [c.email for c in klaviyo.confirmations_sent] == ["ann@example.com"]
    assert klaviyo.subscriptions[0].outcome == "confirmation_sent"
    assert klaviyo.email_consent("ann@example.com")["consent"] == "NEVER_SUBSCRIBED"
    assert klaviyo.flows_fired == []
    assert post(http, klaviyo.base_url + SUBSCRIBE,
                subscription([person("bo@example.com")], list_id="One")).status_code == 202
    assert klaviyo.email_consent("bo@example.com")["consent"] == "SUBSCRIBED"
    assert [(f.flow, f.email, f.list_id) for f in klaviyo.flows_fired] == [
        ("Added to list", "bo@example.com", "One")]


def test_subscribing_lifts_unsubscribes_spam_reports_and_our_suppressions(klaviyo, http):
    klaviyo.account.opt_out("ann@example.com", "UNSUBSCRIBE",
                            datetime(2024, 1, 2, tzinfo=UTC))
    klaviyo.account.opt_out("bo@example.com", "SPAM_COMPLAINT")
    klaviyo.account.opt_out("cy@example.com", "HARD_BOUNCE")
    suppress = {"data": {"type": "profile-suppression-bulk-create-job", "attributes": {
        "profiles": {"data": [{"type": "profile", "attributes": {"email": "di@example.com"}}]}}}}
    assert post(http, klaviyo.base_url + "/api/profile-suppression-bulk-create-jobs",
                suppress).status_code == 202
    assert klaviyo.suppressions_lifted == []
    emails = ["ann@example.com", "bo@example.com", "cy@example.com", "di@example.com"]
    answer = post(http, klaviyo.base_url + SUBSCRIBE, subscription([person(e) for e in emails]))
    assert answer.status_code == 202
    lifted = {(lift.email, lift.reason) for lift in klaviyo.suppressions_lifted}
    assert lifted == {("ann@example.com", "UNSUBSCRIBE"), ("bo@example.com", "SPAM_COMPLAINT"),
                      ("di@example.com", "USER_SUPPRESSED")}
    assert klaviyo.email_consent("cy@example.com")["suppression"][0]["reason"] == "HARD_BOUNCE"
    assert "di@example.com" not in klaviyo.suppressed
    assert klaviyo.stats()["suppressions_lifted"] == 3


def test_our_suppression_job_shows_as_user_suppressed_by_the_api(klaviyo, http):
    suppress = {"data": {"type": "profile-suppression-bulk-create-job", "attributes": {
        "profiles": {"data": [{"type": "profile", "attributes": {"email": "di@example.com"}}]}}}}
    post(http, klaviyo.base_url + "/api/profile-suppression-bulk-create-jobs", suppress)
    consent = klaviyo.email_consent("di@example.com")
    assert [s["reason"] for s in consent["suppression"]] == ["USER_SUPPRESSED"]
    assert consent["method_detail"] == SUPPRESSION_JOB_METHOD_DETAIL
    unsuppress = json.loads(json.dumps(suppress).replace("create-job", "delete-job"))
    post(http, klaviyo.base_url + "/api/profile-suppression-bulk-delete-jobs", unsuppress)
    assert klaviyo.email_consent("di@example.com")["suppression"] == []


def test_a_consent_later_than_the_one_held_is_refused(klaviyo, http):
    url = klaviyo.base_url + SUBSCRIBE
    assert post(http, url, subscription([person(consented_at=PAST)], True)).status_code == 202
    later = post(http, url, subscription([person("bo@example.com", PAST),
                                          person(consented_at="2024-06-01T00:00:00Z")], True))
    assert later.status_code == 400
    problem = later.json()["errors"][0]
    assert problem["detail"] == "backdated consent date is after current subscription date"
    assert problem["source"]["pointer"] == (
        "/data/attributes/profiles/data/1/attributes/subscriptions/email/marketing/consented_at")
    assert [s.email for s in klaviyo.subscriptions] == ["ann@example.com"]  # nothing of it
    earlier = subscription([person(consented_at="2022-01-01T00:00:00Z")], True)
    assert post(http, url, earlier).status_code == 202


FUTURE = (datetime.now(UTC) + timedelta(days=2)).isoformat()


@pytest.mark.parametrize(("body", "pointer", "detail"), [
    (subscription([person()], True), "/email/marketing/consented_at", "is required when"),
    (subscription([person(consented_at=FUTURE)], True), "/email/marketing/consented_at",
     "in the past"),
    (subscription([person(consented_at=PAST)]), "/email/marketing/consented_at",
     "only be given with historical_import"),
    (subscription([person(consented_at="yesterday")], True), "/email/marketing/consented_at",
     "not an ISO 8601"),
    (subscription([person("not-an-email")]), "/email", "not a valid email"),
    (subscription([person(None, phone="+4915112345678")]), "/subscriptions",
     "email or sms marketing"),
    (subscription([person(None, sms=True)]), "", "email or a phone_number"),
    (subscription([person(None, phone="015112345678", sms=True)]), "/phone_number",
     "E.164"),
])
def test_invalid_subscriptions_are_400_with_a_pointer(klaviyo, http, body, pointer, detail):
    answer = post(http, klaviyo.base_url + SUBSCRIBE, body)
    assert answer.status_code == 400
    problem = answer.json()["errors"][0]
    assert problem["source"]["pointer"].startswith("/data/attributes/profiles/data/0")
    assert problem["source"]["pointer"].endswith(pointer)
    assert detail in problem["detail"]
    assert klaviyo.subscriptions == []


def test_the_job_itself_is_checked(klaviyo, http):
    url = klaviyo.base_url + SUBSCRIBE
    too_many = subscription([person(f"p{i}@example.com") for i in range(1001)])
    assert post(http, url, too_many).json()["errors"][0]["source"]["pointer"] == \
        "/data/attributes/profiles/data"
    wrong_type = subscription([person()])
    wrong_type["data"]["type"] = "profile-subscription-job"
    assert post(http, url, wrong_type).json()["errors"][0]["source"]["pointer"] == "/data/type"
    unknown_list = post(http, url, subscription([person()], list_id="Nope"))
    assert unknown_list.status_code == 404
    assert post(http, url, subscription([person()]),
                headers=headers(**{"Content-Type": "text/plain"})).status_code == 415
    assert post(http, url, subscription([person()]),
                headers=headers(revision="")).status_code == 400
    assert post(http, url, subscription([person()]),
                headers=headers(Authorization="Klaviyo-API-Key pk_wrong")).status_code == 401
    assert klaviyo.subscriptions == []
    assert len(post(http, url, subscription([person(f"p{i}@example.com")
                                             for i in range(1000)])).content) == 0
    assert len(klaviyo.subscriptions) == 1000


def test_sms_subscription_needs_an_e164_phone_number(klaviyo, http):
    body = subscription([person("ann@example.com", phone="+4915112345678", sms=True)])
    assert post(http, klaviyo.base_url + SUBSCRIBE, body).status_code == 202
    assert [(s.channel, s.phone_number) for s in klaviyo.subscriptions] == [
        ("email", "+4915112345678"), ("sms", "+4915112345678")]
    assert len(klaviyo.profiles) == 0 and len(klaviyo.account.profile_state) == 1


def test_unsubscribe_is_global_without_a_list_and_from_the_list_with_one(klaviyo, http):
    klaviyo.account.add_list("One", "Single")
    post(http, klaviyo.base_url + SUBSCRIBE,
         subscription([person("ann@example.com"), person("bo@example.com")], list_id="One"))

    def body(email: str, list_id: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "profile-subscription-bulk-delete-job", "attributes": {
            "profiles": {"data": [{"type": "profile", "attributes": {
                "email": email,
                "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}}}]}}}
        if list_id:
            data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
        return {"data": data}

    url = klaviyo.base_url + UNSUBSCRIBE
    assert post(http, url, body("ann@example.com")).status_code == 202
    ann = klaviyo.email_consent("ann@example.com")
    assert ann["consent"] == "UNSUBSCRIBED"
    assert [s["reason"] for s in ann["suppression"]] == ["UNSUBSCRIBE"]
    klaviyo.account.opt_out("cy@example.com", "HARD_BOUNCE")
    assert post(http, url, body("cy@example.com")).status_code == 202
    assert [s["reason"] for s in klaviyo.email_consent("cy@example.com")["suppression"]] == [
        "HARD_BOUNCE", "UNSUBSCRIBE"]  # a bounce stays a bounce
    assert post(http, url, body("bo@example.com", "One")).status_code == 202
    bo = klaviyo.email_consent("bo@example.com")
    assert bo["consent"] == "SUBSCRIBED" and bo["list_suppressions"][0]["list_id"] == "One"
    assert [u.email for u in klaviyo.unsubscriptions] == ["ann@example.com", "cy@example.com",
                                                          "bo@example.com"]
    too_many = body("x@example.com")
    too_many["data"]["attributes"]["profiles"]["data"] *= 101
    assert post(http, url, too_many).status_code == 400
    wrong = body("x@example.com")
    wrong["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"] = {
        "email": {"marketing": {"consent": "SUBSCRIBED"}}}
    refused = post(http, url, wrong)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["source"]["pointer"].endswith("/marketing/consent")


def test_subscriptions_hit_the_burst_limit_with_429(http):
    # A stopped clock keeps all three requests in one burst window however slow the machine.
    with KlaviyoStandIn(api_keys={API_KEY}, limits={"subscribe": (2, 100)},
                        monotonic=lambda: 1200.5) as standin:
        answers = [post(http, standin.base_url + SUBSCRIBE,
                        subscription([person(f"p{i}@example.com")])) for i in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].headers["Retry-After"] == "1"
    assert answers[2].json()["errors"][0]["code"] == "throttled"
    assert [s.email for s in standin.subscriptions] == ["p0@example.com", "p1@example.com"]
    assert not standin.internal_errors


def test_adding_profiles_to_a_list_changes_no_consent_but_starts_flows(klaviyo, http):
    klaviyo.account.add_list("One", "Single")
    ann = klaviyo.add_event("Placed Order", "ann@example.com", datetime(2024, 1, 1, tzinfo=UTC))
    url = f"{klaviyo.base_url}/api/lists/One/relationships/profiles"
    body = {"data": [{"type": "profile", "id": ann.profile_id}]}
    answer = post(http, url, body)
    assert answer.status_code == 204 and answer.content == b""
    assert post(http, url, body).status_code == 204  # already a member: no second flow
    assert [(f.flow, f.email) for f in klaviyo.flows_fired] == [("Added to list",
                                                                  "ann@example.com")]
    assert klaviyo.email_consent("ann@example.com")["consent"] == "NEVER_SUBSCRIBED"
    unknown = post(http, url, {"data": [{"type": "profile", "id": "01NOPE"}]})
    assert unknown.json()["errors"][0]["source"]["pointer"] == "/data/0/id"
    assert post(http, f"{klaviyo.base_url}/api/lists/Nope/relationships/profiles",
                body).status_code == 404
    assert post(http, url, {"data": []}).status_code == 400
