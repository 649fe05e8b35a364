"""Consent as the stand-in's account holds it: per profile, lists, and what subscribing did.

Klaviyo's rules, as the project's notes give them: subscribing a profile to email marketing
lifts its ``UNSUBSCRIBE``, ``SPAM_REPORT``/``SPAM_COMPLAINT`` and ``USER_SUPPRESSED``
suppressions (bounces and invalid addresses stay); a subscription to a double opt-in list
sends a confirmation email instead of subscribing, unless it is a historical import, which
also fires no "Added to list" flow. Everything here is called with the account's lock held.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

#: Suppressions a subscription removes, as Klaviyo documents it.
LIFTED_BY_SUBSCRIBING = frozenset({"UNSUBSCRIBE", "SPAM_REPORT", "SPAM_COMPLAINT",
                                   "USER_SUPPRESSED"})
SUPPRESSION_REASONS = ("HARD_BOUNCE", "INVALID_EMAIL", "SPAM_COMPLAINT", "UNSUBSCRIBE",
                       "USER_SUPPRESSED")
#: The method and method detail the stand-in shows for a suppression made through the
#: profile-suppression bulk job (the API's own suppression, reason USER_SUPPRESSED).
SUPPRESSION_JOB_METHOD = "API"
SUPPRESSION_JOB_METHOD_DETAIL = "profile-suppression-bulk-create-job"
ADDED_TO_LIST = "Added to list"


@dataclass(frozen=True)
class Suppression:
    """One global email marketing suppression of a profile."""

    reason: str
    timestamp: datetime


@dataclass
class ChannelConsent:
    """A profile's marketing consent on one channel (email or SMS)."""

    consent: str = "NEVER_SUBSCRIBED"
    consent_timestamp: datetime | None = None
    method: str | None = None
    method_detail: str | None = None
    custom_method_detail: str | None = None
    double_optin: bool | None = None
    last_updated: datetime | None = None
    suppression: list[Suppression] = field(default_factory=list)
    list_suppressions: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Subscription:
    """One profile of an accepted subscription job, as it was asked for."""

    channel: str  # "email" | "sms"
    email: str | None
    phone_number: str | None
    consent: str
    consented_at: datetime | None
    method: str
    custom_source: str | None
    historical_import: bool
    list_id: str | None
    received_at: datetime
    profile_id: str
    outcome: str  # "subscribed" | "confirmation_sent"


@dataclass(frozen=True)
class Unsubscription:
    """One profile of an accepted unsubscribe job."""

    channel: str
    email: str | None
    phone_number: str | None
    list_id: str | None
    received_at: datetime
    profile_id: str


@dataclass(frozen=True)
class SuppressionLift:
    """A suppression a subscription removed (tests of "never override an opt-out" want 0)."""

    email: str | None
    profile_id: str
    reason: str
    suppressed_at: datetime
    lifted_at: datetime


@dataclass(frozen=True)
class ConfirmationEmail:
    """A double opt-in confirmation the account would have emailed."""

    email: str | None
    list_id: str | None
    sent_at: datetime


@dataclass(frozen=True)
class FlowTrigger:
    """A flow the account would have started (e.g. "Added to list")."""

    flow: str
    email: str | None
    phone_number: str | None
    list_id: str
    at: datetime


@dataclass
class KlaviyoList:
    """A list; ``members`` are profile ids."""

    id: str
    name: str
    double_opt_in: bool
    created: datetime
    members: set[str] = field(default_factory=set)

    @property
    def opt_in_process(self) -> str:
        return "double_opt_in" if self.double_opt_in else "single_opt_in"


@dataclass
class ConsentBook:
    """Consent state keyed by the account's profile ids, lists, and the records tests read."""

    default_double_opt_in: bool = False  # the account's setting for subscriptions without a list
    email: dict[str, ChannelConsent] = field(default_factory=dict)
    sms: dict[str, ChannelConsent] = field(default_factory=dict)
    lists: dict[str, KlaviyoList] = field(default_factory=dict)  # in creation order
    subscriptions: list[Subscription] = field(default_factory=list)
    unsubscriptions: list[Unsubscription] = field(default_factory=list)
    lifts: list[SuppressionLift] = field(default_factory=list)
    confirmations: list[ConfirmationEmail] = field(default_factory=list)
    flows: list[FlowTrigger] = field(default_factory=list)

    def channel(self, name: str, profile_id: str) -> ChannelConsent:
        book = self.email if name == "email" else self.sms
        return book.setdefault(profile_id, ChannelConsent())

    def refusal(self, name: str, profile_id: str | None, consented_at: datetime | None
                ) -> str | None:
        """Klaviyo's detail if ``consented_at`` is later than the consent already held."""
        if profile_id is None or consented_at is None:
            return None
        held = (self.email if name == "email" else self.sms).get(profile_id)
        if held is None or held.consent != "SUBSCRIBED" or held.consent_timestamp is None:
            return None
        if consented_at > held.consent_timestamp:
            return "backdated consent date is after current subscription date"
        return None

    def subscribe(self, wish: Subscription) -> Subscription:
        """Apply one profile's subscription; returns it with its outcome."""
        kept = self.lists.get(wish.list_id) if wish.list_id else None
        if wish.channel == "email":
            self._lift(wish.profile_id, wish.email, wish.received_at)
        double = kept.double_opt_in if kept is not None else self.default_double_opt_in
        if wish.channel == "email" and double and not wish.historical_import:
            self.confirmations.append(ConfirmationEmail(wish.email, wish.list_id,
                                                        wish.received_at))
            return replace(wish, outcome="confirmation_sent")
        record = self.channel(wish.channel, wish.profile_id)
        record.consent = "SUBSCRIBED"
        record.consent_timestamp = wish.consented_at or wish.received_at
        record.method, record.method_detail = wish.method, ""
        record.custom_method_detail = wish.custom_source
        record.double_optin = False
        record.last_updated = wish.received_at
        if kept is not None:
            new_member = wish.profile_id not in kept.members
            kept.members.add(wish.profile_id)
            if new_member and not wish.historical_import:
                self.flows.append(FlowTrigger(ADDED_TO_LIST, wish.email, wish.phone_number,
                                              kept.id, wish.received_at))
        return replace(wish, outcome="subscribed")

    def _lift(self, profile_id: str, email: str | None, now: datetime) -> None:
        record = self.email.get(profile_id)
        if record is None:
            return
        kept = []
        for suppression in record.suppression:
            if suppression.reason in LIFTED_BY_SUBSCRIBING:
                self.lifts.append(SuppressionLift(email, profile_id, suppression.reason,
                                                  suppression.timestamp, now))
            else:
                kept.append(suppression)
        record.suppression = kept

    def unsubscribe(self, gone: Unsubscription) -> None:
        """Unsubscribe: from the list when the profile is in it, else globally (as Klaviyo)."""
        kept = self.lists.get(gone.list_id) if gone.list_id else None
        record = self.channel(gone.channel, gone.profile_id)
        record.last_updated = gone.received_at
        if kept is not None and gone.profile_id in kept.members:
            kept.members.discard(gone.profile_id)
            record.list_suppressions.append({"list_id": kept.id, "reason": "UNSUBSCRIBE",
                                             "timestamp": gone.received_at})
        elif gone.channel == "email":
            self.suppress(gone.profile_id, "UNSUBSCRIBE", gone.received_at, method="API",
                          method_detail="")
        else:
            record.consent, record.consent_timestamp = "UNSUBSCRIBED", gone.received_at
            record.method, record.method_detail = "API", ""
        self.unsubscriptions.append(gone)

    def suppress(self, profile_id: str, reason: str, at: datetime, *,
                 method: str | None = None, method_detail: str | None = None,
                 custom_method_detail: str | None = None) -> None:
        """Put a global email suppression on a profile (an opt-out, a bounce, our own job)."""
        record = self.channel("email", profile_id)
        record.suppression = [s for s in record.suppression if s.reason != reason]
        record.suppression.append(Suppression(reason, at))
        if reason in ("UNSUBSCRIBE", "SPAM_COMPLAINT", "SPAM_REPORT"):
            record.consent, record.consent_timestamp = "UNSUBSCRIBED", at
        record.method, record.method_detail = method, method_detail
        record.custom_method_detail = custom_method_detail
        record.last_updated = at

    def unsuppress(self, profile_id: str, at: datetime) -> None:
        """Lift the USER_SUPPRESSED suppression (the unsuppress job's effect)."""
        record = self.email.get(profile_id)
        if record is not None:
            record.suppression = [s for s in record.suppression if s.reason != "USER_SUPPRESSED"]
            record.last_updated = at

    def counts(self) -> dict[str, int]:
        """How many of each record (for the stand-in's stats)."""
        return {"subscriptions": len(self.subscriptions),
                "unsubscriptions": len(self.unsubscriptions),
                "suppressions_lifted": len(self.lifts),
                "confirmations_sent": len(self.confirmations),
                "flows_fired": len(self.flows)}

    def forget(self, profile_id: str) -> None:
        """Drop everything held about a deleted profile."""
        self.email.pop(profile_id, None)
        self.sms.pop(profile_id, None)
        for kept in self.lists.values():
            kept.members.discard(profile_id)

