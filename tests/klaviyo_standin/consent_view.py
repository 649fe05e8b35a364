"""What the stand-in recorded about consent and erasure, as the test-facing facade shows it.

:class:`~tests.klaviyo_standin.server.KlaviyoStandIn` inherits :class:`ConsentRecords`;
every property is a snapshot taken under the account's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.klaviyo_standin.consent import (
    ConfirmationEmail,
    FlowTrigger,
    Subscription,
    SuppressionLift,
    Unsubscription,
)
from tests.klaviyo_standin.optouts import email_marketing

if TYPE_CHECKING:
    from tests.klaviyo_standin.account import Account
    from tests.klaviyo_standin.privacy import DeletionRequest


class ConsentRecords:
    """Snapshots of subscriptions, lifted suppressions, confirmations, flows and deletions."""

    account: Account

    @property
    def subscriptions(self) -> list[Subscription]:
        """One per profile and channel of every accepted subscription job, in order."""
        with self.account.lock:
            return list(self.account.consent.subscriptions)

    @property
    def unsubscriptions(self) -> list[Unsubscription]:
        with self.account.lock:
            return list(self.account.consent.unsubscriptions)

    @property
    def suppressions_lifted(self) -> list[SuppressionLift]:
        """Suppressions (opt-outs, our own) that a subscription removed, as Klaviyo does."""
        with self.account.lock:
            return list(self.account.consent.lifts)

    @property
    def confirmations_sent(self) -> list[ConfirmationEmail]:
        """Double opt-in confirmation emails the account would have sent."""
        with self.account.lock:
            return list(self.account.consent.confirmations)

    @property
    def flows_fired(self) -> list[FlowTrigger]:
        """Flows ("Added to list") the account would have started."""
        with self.account.lock:
            return list(self.account.consent.flows)

    @property
    def deletion_requests(self) -> list[DeletionRequest]:
        with self.account.lock:
            return list(self.account.deletion_requests)

    def email_consent(self, email: str) -> dict[str, Any] | None:
        """``subscriptions.email.marketing`` of the profile with this email, as GET shows it."""
        with self.account.lock:
            profile_id = self.account.profile_id_for("email", email)
            if profile_id is None:
                return None
            return email_marketing(self.account.consent.email.get(profile_id))
