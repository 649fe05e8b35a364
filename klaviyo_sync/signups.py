"""`klaviyo-sync missed-signups`: the ruleset (business/) fed from the app's parts.

It lives outside business/ because it needs a sender (to read Started Checkout events
from Klaviyo and to write the profile flags), and business/ never imports senders/.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from klaviyo_sync.business.checkout_events import CheckoutAttempt, KlaviyoReader, iter_checkouts
from klaviyo_sync.business.missed_signups import (
    SignupOutcome,
    evaluate_signups,
    window,
    write_profile_flags,
)
from klaviyo_sync.exceptions import ConfigError, StateMissingError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from klaviyo_sync.app import App


def run_ruleset(app: App, since: date | None = None, until: date | None = None,
                include_klaviyo: bool = False) -> SignupOutcome:
    """Apply the ruleset to the business database (and Klaviyo's checkouts if asked) and
    write the profile flags when ``missed_signups.write_profile_flag`` says so."""
    settings = app.settings
    business = app.business_engine
    if business is None:
        raise ConfigError("business.url is empty: the missed-signup ruleset reads the "
                          "business database")
    write_flags = settings.missed_signups.write_profile_flag
    sender = app.sender if include_klaviyo or write_flags else None
    checkouts: list[CheckoutAttempt] = []
    if include_klaviyo:
        if not isinstance(sender, KlaviyoReader):
            raise ConfigError("--include-klaviyo reads from Klaviyo: it needs "
                              "sender.kind = \"klaviyo\"")
        start, end = window(since, until)
        checkouts = list(iter_checkouts(sender, settings.missed_signups.klaviyo_checkout_metric,
                                        start, end))
    try:
        state: Engine | None = app.state_engine
    except StateMissingError:
        if not app.read_only:
            raise
        state = None  # nothing has run yet: no attempt is recorded, and none is created
    outcome = evaluate_signups(state, business, settings, since, until, checkouts)
    if sender is not None and write_flags:
        write_profile_flags(sender, outcome, settings.klaviyo.profile_properties.missed_signup)
    return outcome
