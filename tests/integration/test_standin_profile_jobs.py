"""The stand-in's bulk profile import jobs: validation, read-back, import errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.integration.test_standin import headers, post
from tests.klaviyo_standin import KlaviyoStandIn

JOBS = "/api/profile-bulk-import-jobs"


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def job(*attributes: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": a} for a in attributes]}}}}


def people(count: int, **special: dict[str, Any]) -> list[dict[str, Any]]:
    return [special.get(str(n), {"email": f"p{n}@example.com", "external_id": str(n),
                                 "properties": {"Box": "Organic Box"}})
            for n in range(count)]


def get(http: requests.Session, url: str, **params: str) -> requests.Response:
    return http.get(url, headers=headers(), params=params, timeout=10)


def test_job_is_queued_then_processing_then_complete_and_profiles_land(
        klaviyo: KlaviyoStandIn, http: requests.Session) -> None:
    created = post(http, klaviyo.base_url + JOBS, job(*people(3)))
    assert created.status_code == 202
    data = created.json()["data"]
    assert data["type"] == "profile-bulk-import-job"
    assert data["attributes"]["status"] == "queued"
    url = f"{klaviyo.base_url}{JOBS}/{data['id']}"
    seen = [get(http, url).json()["data"]["attributes"] for _ in range(3)]
    assert [s["status"] for s in seen] == ["processing", "complete", "complete"]
    assert seen[-1]["total_count"] == 3 and seen[-1]["completed_count"] == 3
    assert seen[-1]["failed_count"] == 0
    assert klaviyo.profiles["p1@example.com"]["properties"] == {"Box": "Organic Box"}
    assert klaviyo.profile_jobs.unread() == []


def test_one_malformed_email_refuses_the_whole_request_with_its_pointer(
        klaviyo: KlaviyoStandIn, http: requests.Session) -> None:
    body = job(*people(50, **{"17": {"email": "no-at-sign", "external_id": "17"}}))
    refused = post(http, klaviyo.base_url + JOBS, body)
    assert refused.status_code == 400
    (problem,) = refused.json()["errors"]
    assert problem["source"]["pointer"] == "/data/attributes/profiles/data/17/attributes/email"
    assert "not a valid email" in problem["detail"]
    assert klaviyo.profiles == {}  # all or nothing


@pytest.mark.parametrize(("document", "pointer"), [
    ({"data": {"type": "profile-bulk-import-job", "attributes": {}}},
     "/data/attributes/profiles"),
    (job({"first_name": "No identifier"}), "/data/attributes/profiles/data/0"),
    (job({"email": "a@example.com", "properties": "not an object"}),
     "/data/attributes/profiles/data/0/attributes/properties"),
])
def test_malformed_documents_are_400_with_a_pointer(klaviyo: KlaviyoStandIn,
                                                    http: requests.Session,
                                                    document: dict[str, Any],
                                                    pointer: str) -> None:
    refused = post(http, klaviyo.base_url + JOBS, document)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["source"]["pointer"] == pointer


def test_over_10000_profiles_is_refused(klaviyo: KlaviyoStandIn,
                                        http: requests.Session) -> None:
    refused = post(http, klaviyo.base_url + JOBS, job(*people(10_001)))
    assert refused.status_code == 400 and "at most 10000" in refused.json()["errors"][0]["detail"]


def test_injected_failures_are_listed_as_import_errors_page_by_page(
        klaviyo: KlaviyoStandIn, http: requests.Session) -> None:
    klaviyo.profile_jobs.fail_emails({f"p{n}@example.com": f"blocked {n}" for n in (2, 5, 9)})
    created = post(http, klaviyo.base_url + JOBS, job(*people(10))).json()["data"]
    url = f"{klaviyo.base_url}{JOBS}/{created['id']}"
    get(http, url)
    done = get(http, url).json()["data"]["attributes"]
    assert (done["status"], done["completed_count"], done["failed_count"]) == ("complete", 7, 3)
    errors: list[dict[str, Any]] = []
    page = get(http, url + "/import-errors", **{"page[size]": "2"}).json()
    pages = 1
    errors += page["data"]
    while page["links"].get("next"):
        page = http.get(page["links"]["next"], headers=headers(), timeout=10).json()
        errors += page["data"]
        pages += 1
    assert pages == 2
    assert [e["attributes"]["source"]["pointer"] for e in errors] == [
        f"/data/attributes/profiles/data/{n}" for n in (2, 5, 9)]
    assert errors[1]["attributes"]["detail"] == "blocked 5"
    assert errors[1]["attributes"]["original_payload"]["external_id"] == "5"
    assert {e["type"] for e in errors} == {"import-error"}
    assert "p5@example.com" not in klaviyo.profiles and "p4@example.com" in klaviyo.profiles


def test_unknown_job_is_404(klaviyo: KlaviyoStandIn, http: requests.Session) -> None:
    assert get(http, f"{klaviyo.base_url}{JOBS}/NOPE").status_code == 404
    assert get(http, f"{klaviyo.base_url}{JOBS}/NOPE/import-errors").status_code == 404
