"""Consent at Klaviyo: profile-subscription bulk jobs out, profiles' consent records back.

:class:`KlaviyoConsentApi` rides on :meth:`KlaviyoClient.request` (auth, pacing, audit,
classification of answers); the dry-run counterpart lives in ``senders/dryrun.py``.
Bodies are built by pure functions here so both write the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from klaviyo_sync.business.consent_records import (
    SUBSCRIBE_MAX,
    KlaviyoConsent,
    Subscribe,
)
from klaviyo_sync.clock import iso_utc

#: Profiles per page of GET /api/profiles (Klaviyo's maximum).
PROFILES_PAGE = 100
#: Emails per any(email, [...]) filter, kept well under URL length limits.
EMAILS_PER_LOOKUP = 100
SUPPRESSION_TIMESTAMP = "subscriptions.email.marketing.suppression.timestamp"
PROFILES = "/api/profiles"
SUBSCRIBE = "/api/profile-subscription-bulk-create-jobs"
LISTS = "/api/lists"


def subscription_body(profiles: Sequence[Subscribe], historical: bool, custom_source: str,
                      list_id: str = "") -> dict[str, Any]:
    """POST /api/profile-subscription-bulk-create-jobs for up to 1,000 profiles.

    ``consented_at`` goes only with ``historical_import`` (Klaviyo refuses it otherwise).
    """
    if len(profiles) > SUBSCRIBE_MAX:
        raise ValueError(f"at most {SUBSCRIBE_MAX} profiles per subscription job")
    data = []
    for p in profiles:
        marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
        if historical:
            if p.consented_at is None:
                raise ValueError("a historical subscription needs its consented_at")
            marketing["consented_at"] = iso_utc(p.consented_at, to_second=True)
        subscriptions: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        if p.email:
            attributes["email"] = p.email
        if p.email_marketing:
            subscriptions["email"] = {"marketing": dict(marketing)}
        if p.sms_marketing and p.phone:
            attributes["phone_number"] = p.phone
            subscriptions["sms"] = {"marketing": dict(marketing)}
        attributes["subscriptions"] = subscriptions
        data.append({"type": "profile", "attributes": attributes})
    attrs: dict[str, Any] = {"custom_source": custom_source, "profiles": {"data": data}}
    if historical:
        attrs["historical_import"] = True
    body: dict[str, Any] = {"data": {"type": "profile-subscription-bulk-create-job",
                                     "attributes": attrs}}
    if list_id:
        body["data"]["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return body


def email_lookup_params(emails: Iterable[str]) -> dict[str, str]:
    quoted = ",".join(f'"{e}"' for e in emails)
    return {"filter": f"any(email,[{quoted}])", "page[size]": str(PROFILES_PAGE),
            "additional-fields[profile]": "subscriptions"}


def suppressed_since_params(since: datetime | None) -> dict[str, str]:
    """Profiles whose email suppression is at or after ``since``, oldest change first.

    At-or-after, not after: the cursor is the last committed page's newest time, and
    another opt-out at that very moment must not be skipped (recording is idempotent).
    """
    params = {"sort": SUPPRESSION_TIMESTAMP, "page[size]": str(PROFILES_PAGE),
              "additional-fields[profile]": "subscriptions"}
    if since is not None:
        params["filter"] = (f"greater-or-equal({SUPPRESSION_TIMESTAMP},"
                            f"{iso_utc(since)})")
    else:
        params["filter"] = f"greater-than({SUPPRESSION_TIMESTAMP},1970-01-01T00:00:00Z)"
    return params


class Requester(Protocol):
    def request(self, method: str, path: str, body: dict[str, Any] | bytes | None,
                items: int = 0, query: dict[str, str] | None = None,
                endpoint: str | None = None) -> Any: ...


class KlaviyoConsentApi:
    """:class:`ConsentApi` over Klaviyo's API (a :class:`KlaviyoClient`)."""

    reads = True

    def __init__(self, client: Requester, custom_source: str, list_id: str = "") -> None:
        self.client = client
        self.custom_source = custom_source
        self.list_id = list_id

    def subscribe(self, profiles: Sequence[Subscribe], historical: bool) -> None:
        body = subscription_body(profiles, historical, self.custom_source, self.list_id)
        self.client.request("POST", SUBSCRIBE, body, items=len(profiles))

    def consent_of(self, emails: Sequence[str]) -> dict[str, KlaviyoConsent]:
        """Klaviyo's consent for these emails (lower-cased); absent: no such profile."""
        found: dict[str, KlaviyoConsent] = {}
        wanted = sorted({e.strip().lower() for e in emails if e})
        for start in range(0, len(wanted), EMAILS_PER_LOOKUP):
            params = email_lookup_params(wanted[start:start + EMAILS_PER_LOOKUP])
            for page in self._pages(params):
                found.update({c.email: c for c in page if c.email})
        return found

    def suppressed_pages(self, since: datetime | None) -> Iterator[list[KlaviyoConsent]]:
        return self._pages(suppressed_since_params(since))

    def all_pages(self) -> Iterator[list[KlaviyoConsent]]:
        return self._pages({"sort": "id", "page[size]": str(PROFILES_PAGE),
                            "additional-fields[profile]": "subscriptions"})

    def list_opt_in(self, list_id: str) -> str | None:
        """The list's opt-in process (``single_opt_in`` / ``double_opt_in``), or None when
        Klaviyo has no such list (GET /api/lists)."""
        body = self.client.request("GET", LISTS, None,
                                   query={"filter": f'equals(id,"{list_id}")'},
                                   endpoint=f"GET {LISTS}").json()
        for found in body.get("data") or []:
            if found.get("id") == list_id:
                return str((found.get("attributes") or {}).get("opt_in_process") or "unknown")
        return None

    def _pages(self, params: dict[str, str]) -> Iterator[list[KlaviyoConsent]]:
        url: str | None = PROFILES
        query: dict[str, str] | None = params
        while url:
            body = self.client.request("GET", url, None, query=query,
                                       endpoint=f"GET {PROFILES}").json()
            yield [KlaviyoConsent.from_resource(r) for r in body.get("data") or []]
            url = (body.get("links") or {}).get("next")
            query = None  # the next link carries the cursor and the filter
