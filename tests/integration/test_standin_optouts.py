"""The stand-in reads opt-outs and lists back as Klaviyo's GET /api/profiles and /api/lists do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY

REVISION = "2026-07-15"
STAMP = "subscriptions.email.marketing.suppression.timestamp"
HEADERS = {"Content-Type": "application/vnd.api+json", "Accept": "application/vnd.api+json",
           "Authorization": f"Klaviyo-API-Key {API_KEY}", "revision": REVISION}
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def post(http: requests.Session, url: str, document: Any) -> requests.Response:
    return http.post(url, data=json.dumps(document), headers=HEADERS, timeout=10)


def get(http: requests.Session, url: str, **params: str) -> requests.Response:
    return http.get(url, params=params, headers=HEADERS, timeout=10)


def follow(http: requests.Session, url: str, **params: str) -> list[dict[str, Any]]:
    pages, answer = [], get(http, url, **params)
    while True:
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        next_url = answer.json()["links"].get("next")
        if not next_url:
            return pages
        answer = http.get(next_url, headers=HEADERS, timeout=10)


def emails(pages: list[dict[str, Any]]) -> list[str]:
    return [p["attributes"]["email"] for page in pages for p in page["data"]]


def test_profiles_from_every_source_show_up_once(klaviyo, http):
    base = klaviyo.base_url
    klaviyo.add_event("Placed Order", "ev@example.com", T0)
    post(http, f"{base}/api/profile-import", {"data": {"type": "profile", "attributes": {
        "email": "imp@example.com", "first_name": "Imp"}}})
    post(http, f"{base}/api/profile-suppression-bulk-create-jobs", {"data": {
        "type": "profile-suppression-bulk-create-job", "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "sup@example.com"}}]}}}})
    post(http, f"{base}/api/profile-subscription-bulk-create-jobs", {"data": {
        "type": "profile-subscription-bulk-create-job", "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {
                "email": "IMP@example.com",
                "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}},
            {"type": "profile", "attributes": {
                "email": "sub@example.com",
                "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}}}})
    klaviyo.account.opt_out("opt@example.com")
    pages = follow(http, f"{base}/api/profiles", **{"additional-fields[profile]": "subscriptions"})
    found = {p["attributes"]["email"].lower(): p for page in pages for p in page["data"]}
    assert sorted(found) == ["ev@example.com", "imp@example.com", "opt@example.com",
                             "sub@example.com", "sup@example.com"]
    assert found["imp@example.com"]["attributes"]["first_name"] == "Imp"
    marketing = {email: p["attributes"]["subscriptions"]["email"]["marketing"]
                 for email, p in found.items()}
    assert marketing["imp@example.com"]["consent"] == "SUBSCRIBED"
    assert marketing["ev@example.com"]["consent"] == "NEVER_SUBSCRIBED"
    assert marketing["opt@example.com"]["consent"] == "UNSUBSCRIBED"
    assert marketing["sup@example.com"]["suppression"][0]["reason"] == "USER_SUPPRESSED"
    assert not marketing["sup@example.com"]["can_receive_email_marketing"]
    assert "subscriptions" not in get(http, f"{base}/api/profiles").json()["data"][0][
        "attributes"]


def test_suppression_filter_and_sort_page_through_what_changed_since_a_cursor(klaviyo, http):
    for index in range(25):
        klaviyo.account.opt_out(f"o{index:02}@example.com",
                                "SPAM_COMPLAINT" if index % 5 == 0 else "UNSUBSCRIBE",
                                T0 + timedelta(minutes=25 - index),
                                method_detail="unsubscribe_link")
    klaviyo.add_event("Placed Order", "never@example.com", T0)
    since = (T0 + timedelta(minutes=5)).isoformat()
    pages = follow(http, f"{klaviyo.base_url}/api/profiles", **{
        "additional-fields[profile]": "subscriptions", "sort": STAMP, "page[size]": "7",
        "filter": f"greater-than({STAMP},{since})"})
    assert [len(page["data"]) for page in pages] == [7, 7, 6]
    # Oldest first: o19 opted out at T0+6 min, o00 at T0+25 min; o20..o24 are not after T0+5.
    assert emails(pages) == [f"o{index:02}@example.com" for index in range(19, -1, -1)]
    first = pages[0]["data"][0]["attributes"]["subscriptions"]["email"]["marketing"]
    assert first["suppression"] == [{"reason": "UNSUBSCRIBE",
                                     "timestamp": (T0 + timedelta(minutes=6)).isoformat()}]
    assert first["method_detail"] == "unsubscribe_link"
    newest = follow(http, f"{klaviyo.base_url}/api/profiles", **{
        "sort": f"-{STAMP}", "page[size]": "2",
        "filter": f"and(greater-or-equal({STAMP},{since}),equals("
                  "subscriptions.email.marketing.suppression.reason,\"SPAM_COMPLAINT\"))"})
    assert emails(newest) == ["o00@example.com", "o05@example.com", "o10@example.com",
                              "o15@example.com", "o20@example.com"]


def test_a_cursor_does_not_skip_an_opt_out_made_while_paging(klaviyo, http):
    for index in range(4):
        klaviyo.account.opt_out(f"o{index}@example.com", at=T0 + timedelta(minutes=index))
    params = {"sort": STAMP, "page[size]": "2", "filter": f"greater-than({STAMP},{T0.isoformat()})"}
    first = get(http, f"{klaviyo.base_url}/api/profiles", **params).json()
    klaviyo.account.opt_out("late@example.com", at=T0 + timedelta(minutes=10))
    rest = follow(http, first["links"]["next"])
    assert emails([first, *rest]) == ["o1@example.com", "o2@example.com", "o3@example.com",
                                      "late@example.com"]


def test_email_filters_equals_and_any(klaviyo, http):
    for name in ("ann", "bo", "cy"):
        klaviyo.add_event("Placed Order", f"{name}@example.com", T0)
    url = f"{klaviyo.base_url}/api/profiles"
    assert emails([get(http, url, filter='equals(email,"bo@example.com")').json()]) == [
        "bo@example.com"]
    found = get(http, url, filter='any(email,["ann@example.com","cy@example.com"])').json()
    assert sorted(emails([found])) == ["ann@example.com", "cy@example.com"]
    profile_id = found["data"][0]["id"]
    assert get(http, url, filter=f'equals(id,"{profile_id}")').json()["data"][0]["id"] == \
        profile_id
    assert len(follow(http, url, **{"page[size]": "1"})) == 3


@pytest.mark.parametrize("params", [
    {"page[size]": "101"}, {"page[size]": "0"}, {"page[size]": "ten"},
    {"filter": "equals(first_name,\"Ann\")"}, {"filter": f"equals({STAMP},2024-01-01)"},
    {"filter": f"greater-than({STAMP},yesterday)"}, {"filter": "any(email,ann@example.com)"},
    {"sort": "first_name"}, {"additional-fields[profile]": "predictive_analytics"},
    {"page[cursor]": "!!"},
])
def test_unsupported_profile_queries_are_400(klaviyo, http, params):
    answer = get(http, f"{klaviyo.base_url}/api/profiles", **params)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["source"]["parameter"] in (
        "filter", "sort", "additional-fields[profile]")


def test_lists_are_paged_ten_at_a_time_and_filtered(klaviyo, http):
    for index in range(23):
        klaviyo.account.add_list(f"L{index:02}", f"List {index}", double_opt_in=index == 3)
    pages = follow(http, f"{klaviyo.base_url}/api/lists")
    assert [len(page["data"]) for page in pages] == [10, 10, 3]
    lists = [item for page in pages for item in page["data"]]
    assert [item["id"] for item in lists] == [f"L{index:02}" for index in range(23)]
    assert lists[3]["attributes"]["opt_in_process"] == "double_opt_in"
    assert lists[4]["attributes"]["opt_in_process"] == "single_opt_in"
    named = get(http, f"{klaviyo.base_url}/api/lists", filter='equals(name,"List 7")').json()
    assert [item["id"] for item in named["data"]] == ["L07"]
    assert get(http, f"{klaviyo.base_url}/api/lists", **{"page[size]": "11"}).status_code == 400


def test_profile_reads_hit_the_burst_limit_with_429(http):
    with KlaviyoStandIn(api_keys={API_KEY}, limits={"get_profiles": (3, 100)},
                        monotonic=lambda: 1200.5) as standin:
        statuses = [get(http, f"{standin.base_url}/api/profiles").status_code
                    for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
