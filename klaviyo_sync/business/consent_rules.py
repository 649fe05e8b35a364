"""The consent rules, as pure functions: who may be subscribed, how, and whose opt-out.

- Only a customer the business shows opted in (and not in a dead status) is subscribed.
- Never over a later opt-out: a Klaviyo opt-out newer than the business opt-in makes the
  customer a conflict, listed and not subscribed (subscribing would lift it).
- Consent older than the historical threshold is imported as historical (no confirmation
  email, no "Added to list" flow, its own consented_at); newer consent is subscribed live.
- Our own suppressions (the Dead/opted-out rule's suppression jobs, or anything carrying
  our custom_source) are ours: never an opt-out to report, never a conflict.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta

from klaviyo_sync.business.consent_records import KlaviyoConsent, Suppression
from klaviyo_sync.business.consent_source import ConsentCustomer

#: Klaviyo's reason for a suppression made by a profile-suppression job (ours).
JOB_SUPPRESSION_REASON = "USER_SUPPRESSED"


class ConsentState(enum.StrEnum):
    """A consent_sync row's state (email; the SMS column uses the same names)."""

    PENDING = "pending"  # to be subscribed
    SENDING = "sending"  # its request may be in flight: read Klaviyo back before resending
    SUBSCRIBED = "subscribed"
    CONFLICT = "conflict"  # a newer Klaviyo opt-out: never subscribed
    REFUSED = "refused"  # Klaviyo refused this profile (its detail in reason)
    OPTED_OUT = "opted_out"  # the business opt-in turned off after we subscribed
    INVALID_PHONE = "invalid_phone"  # SMS only: not E.164


class Action(enum.StrEnum):
    """What the reconciliation does about one disagreement."""

    SUBSCRIBE_HISTORICAL = "subscribe as historical"
    SUBSCRIBE_LIVE = "subscribe live"
    RECORD_OPTOUT = "record opt-out"
    CONFLICT = "conflict: newer Klaviyo opt-out, not subscribed"
    NOT_OPTED_IN = "subscribed in Klaviyo but not opted in with the business: suppress"


def wants_email(customer: ConsentCustomer, dead_statuses: Collection[str]) -> bool:
    """Whether the business shows this customer opted in to email marketing."""
    c = customer.customer
    return bool(customer.email and c.email_opt_in
                and (c.status is None or c.status not in dead_statuses))


def is_historical(opt_in_at: datetime | None, now: datetime, threshold_h: float) -> bool:
    """Consent collected before the threshold is a historical import."""
    return opt_in_at is not None and opt_in_at < now - timedelta(hours=threshold_h)


def is_ours(suppression: Suppression, consent: KlaviyoConsent, our_emails: Collection[str],
            custom_source: str) -> bool:
    """Whether this suppression is our own doing rather than the customer's opt-out."""
    if consent.custom_method_detail and consent.custom_method_detail == custom_source:
        return True
    return (suppression.reason == JOB_SUPPRESSION_REASON
            and (consent.email or "") in our_emails)


def their_optouts(consent: KlaviyoConsent, our_emails: Collection[str], custom_source: str
                  ) -> list[Suppression]:
    """The profile's suppressions that the customer (or Klaviyo) made, not us."""
    return [s for s in consent.suppressions
            if not is_ours(s, consent, our_emails, custom_source)]


def newer_optout(opt_in_at: datetime | None, optouts: Iterable[Suppression]
                 ) -> Suppression | None:
    """The newest opt-out later than the business opt-in (None: safe to subscribe).

    A customer with no known opt-in time cannot be shown to have opted in after any
    opt-out, so every opt-out counts as newer.
    """
    newest = max(optouts, key=lambda s: s.at, default=None)
    if newest is None:
        return None
    if opt_in_at is None or newest.at > opt_in_at:
        return newest
    return None
