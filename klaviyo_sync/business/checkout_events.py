"""Front-end `Started Checkout` events read back from Klaviyo, for the missed-signup ruleset.

GET /api/metrics finds the metric's id by name (Klaviyo cannot filter metrics by name);
GET /api/events is filtered by that id and the time window and followed page by page
through ``links.next``. ``include=profile`` brings each event's email in the same answer
(an event resource itself only names its profile's id); sparse fieldsets keep the pages
small. Every request goes through the client's ``request``, so it is paced and audited
like any other call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from klaviyo_sync.clock import iso_utc, to_naive_utc
from klaviyo_sync.exceptions import BusinessDataError

#: Events per page (Klaviyo's maximum for GET /api/events).
PAGE_SIZE = 1000


@dataclass(frozen=True)
class CheckoutAttempt:
    """One front-end checkout start, as Klaviyo recorded it."""

    email: str | None
    external_id: str | None
    occurred_at: datetime  # naive UTC


@runtime_checkable
class KlaviyoReader(Protocol):
    def get_metrics(self) -> list[dict[str, Any]]: ...

    def request(self, method: str, path: str, body: dict[str, Any] | None, items: int = 0,
                query: dict[str, str] | None = None, endpoint: str | None = None) -> Any: ...


def find_metric_id(client: KlaviyoReader, name: str) -> str | None:
    """The id of the metric called ``name`` (case-sensitive, as Klaviyo names it), or None."""
    for metric in client.get_metrics():
        if (metric.get("attributes") or {}).get("name") == name:
            return str(metric["id"])
    return None


def iter_checkouts(client: KlaviyoReader, metric_name: str, since: datetime | None = None,
                   until: datetime | None = None) -> Iterator[CheckoutAttempt]:
    """Every ``metric_name`` event in [since, until) with its profile's email, oldest first."""
    metric_id = find_metric_id(client, metric_name)
    if metric_id is None:
        return
    terms = [f'equals(metric_id,"{metric_id}")']
    if since is not None:
        terms.append(f"greater-or-equal(datetime,{iso_utc(since, to_second=True)})")
    if until is not None:
        terms.append(f"less-than(datetime,{iso_utc(until, to_second=True)})")
    query: dict[str, str] | None = {
        "filter": f"and({','.join(terms)})" if len(terms) > 1 else terms[0],
        "sort": "datetime", "include": "profile", "page[size]": str(PAGE_SIZE),
        "fields[event]": "datetime", "fields[profile]": "email,external_id",
    }
    url: str | None = "/api/events"
    while url:
        body = client.request("GET", url, None, query=query, endpoint="GET /api/events").json()
        profiles = {p.get("id"): p.get("attributes") or {} for p in body.get("included") or []
                    if p.get("type") == "profile"}
        for event in body.get("data") or []:
            yield _attempt(event, profiles)
        url = (body.get("links") or {}).get("next")
        query = None  # the next link carries the cursor and the filter


def _attempt(event: dict[str, Any], profiles: dict[Any, dict[str, Any]]) -> CheckoutAttempt:
    attributes = event.get("attributes") or {}
    try:
        moment = to_naive_utc(datetime.fromisoformat(str(attributes["datetime"])))
    except (KeyError, ValueError) as exc:
        raise BusinessDataError(f"Klaviyo event {event.get('id')} has no readable datetime"
                                ) from exc
    profile_id = ((event.get("relationships") or {}).get("profile") or {}).get("data") or {}
    profile = profiles.get(profile_id.get("id"), {})
    return CheckoutAttempt(email=profile.get("email") or None,
                           external_id=profile.get("external_id") or None, occurred_at=moment)
