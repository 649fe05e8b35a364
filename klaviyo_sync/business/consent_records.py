"""What the consent passes know of Klaviyo's consent, and what they need of its API.

Records (a subscription to send, a suppression, a profile's consent) and the
:class:`ConsentApi` protocol live with the business rules that use them; the API's
implementations are in ``senders/consent.py`` (Klaviyo) and ``senders/dryrun.py``
(the outbox), constructed by the wiring (app.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

#: Klaviyo's cap on profiles per subscription job.
SUBSCRIBE_MAX = 1000


@dataclass(frozen=True)
class Subscribe:
    """One profile of a subscription job: email marketing, SMS marketing or both."""

    email: str | None
    phone: str | None = None
    consented_at: datetime | None = None  # naive UTC; sent only with historical_import
    email_marketing: bool = True
    sms_marketing: bool = False


@dataclass(frozen=True)
class Suppression:
    """One global email-marketing suppression Klaviyo holds for a profile."""

    reason: str
    at: datetime  # naive UTC


@dataclass(frozen=True)
class KlaviyoConsent:
    """A profile's email-marketing consent as GET /api/profiles shows it."""

    profile_id: str
    email: str | None
    external_id: str | None
    consent: str  # SUBSCRIBED, UNSUBSCRIBED, NEVER_SUBSCRIBED, ...
    consent_at: datetime | None
    method: str | None
    method_detail: str | None
    custom_method_detail: str | None
    suppressions: tuple[Suppression, ...]
    sms_consent: str | None = None

    @property
    def subscribed(self) -> bool:
        return self.consent == "SUBSCRIBED" and not self.suppressions

    @classmethod
    def from_resource(cls, resource: dict[str, Any]) -> KlaviyoConsent:
        attrs = resource.get("attributes") or {}
        subs = attrs.get("subscriptions") or {}
        marketing = (subs.get("email") or {}).get("marketing") or {}
        sms = (subs.get("sms") or {}).get("marketing") or {}
        found = tuple(Suppression(str(s.get("reason") or ""), _naive_utc(s["timestamp"]))
                      for s in marketing.get("suppression") or []
                      if isinstance(s, dict) and s.get("timestamp"))
        email = attrs.get("email")
        return cls(profile_id=str(resource.get("id") or ""),
                   email=email.strip().lower() if isinstance(email, str) else None,
                   external_id=_text(attrs.get("external_id")),
                   consent=str(marketing.get("consent") or "NEVER_SUBSCRIBED"),
                   consent_at=(_naive_utc(marketing["consent_timestamp"])
                               if marketing.get("consent_timestamp") else None),
                   method=_text(marketing.get("method")),
                   method_detail=_text(marketing.get("method_detail")),
                   custom_method_detail=_text(marketing.get("custom_method_detail")),
                   suppressions=found, sms_consent=_text(sms.get("consent")))


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _naive_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class ConsentApi(Protocol):
    """What the consent and opt-outs passes need of Klaviyo."""

    #: False for the dry-run outbox, which cannot read Klaviyo's consent back.
    reads: bool

    def subscribe(self, profiles: Sequence[Subscribe], historical: bool) -> None: ...

    def consent_of(self, emails: Sequence[str]) -> dict[str, KlaviyoConsent]: ...

    def suppressed_pages(self, since: datetime | None) -> Iterator[list[KlaviyoConsent]]: ...

    def all_pages(self) -> Iterator[list[KlaviyoConsent]]: ...

    def list_opt_in(self, list_id: str) -> str | None: ...
