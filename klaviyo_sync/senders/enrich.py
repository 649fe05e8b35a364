"""What each event carries: the queued event plus the customer's data as it is now.

The profile is built when the event is sent, not when it was logged, so Klaviyo always
gets the customer's current schedule, status, box and sign-up date. A customer the
business database does not know goes out with what the log line had.
"""

from __future__ import annotations

from typing import Any

from klaviyo_sync.business.customers import Customer
from klaviyo_sync.config import ProfileProperties
from klaviyo_sync.queue.models import QueuedEvent
from klaviyo_sync.senders.base import OutgoingEvent

#: Profile attributes a log line may carry that Klaviyo's profile object accepts.
_LOG_PROFILE_KEYS = ("first_name", "last_name", "phone_number", "organization", "title")

NO_IDENTIFIER = "no email and no customer id: Klaviyo needs a profile identifier"


def has_identifier(event: QueuedEvent) -> bool:
    return bool(event.email or event.customer_id)


def build_profile(event: QueuedEvent, customer: Customer | None,
                  names: ProfileProperties) -> dict[str, Any]:
    """Klaviyo profile attributes for ``event``: current data first, then the log's."""
    logged = event.profile
    profile: dict[str, Any] = (
        {k: logged[k] for k in _LOG_PROFILE_KEYS if logged.get(k)} if logged else {})
    email = (customer.email if customer else None) or event.email
    if email:
        profile["email"] = email
    if event.customer_id:
        profile["external_id"] = str(event.customer_id)
    if customer is not None:
        if customer.first_name:
            profile["first_name"] = customer.first_name
        if customer.last_name:
            profile["last_name"] = customer.last_name
        # None values are sent on purpose: a customer who no longer has a box must not
        # keep the old one in Klaviyo (missed-signup segments read these).
        profile["properties"] = {
            names.schedule: customer.schedule,
            names.status: customer.status,
            names.box: customer.box,
            names.signup_date: (customer.signup_date.isoformat()
                                if customer.signup_date else None),
        }
    return profile


def outgoing(event: QueuedEvent, customer: Customer | None, names: ProfileProperties,
             default_currency: str) -> OutgoingEvent:
    """The event as the sender takes it."""
    currency = event.value_currency or (default_currency if event.value is not None else None)
    return OutgoingEvent(
        queue_id=event.id, unique_id=event.unique_id, metric=event.metric,
        time=event.occurred_at, properties=dict(event.properties or {}),
        profile=build_profile(event, customer, names), value=event.value,
        value_currency=currency, backfill=event.backfill, resend=event.attempts > 1,
    )
