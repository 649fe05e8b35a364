"""The consent rules and bodies as pure functions: E.164, never over a newer opt-out,
ours or theirs, historical or live, and the exact subscription job body."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from klaviyo_sync.business.consent_records import KlaviyoConsent, Subscribe, Suppression
from klaviyo_sync.business.consent_rules import (
    is_historical,
    is_ours,
    newer_optout,
    their_optouts,
    wants_email,
)
from klaviyo_sync.business.consent_source import ConsentCustomer, e164_problem
from klaviyo_sync.business.customers import Customer
from klaviyo_sync.senders.consent import subscription_body, suppressed_since_params

T = datetime(2026, 5, 1, 12, 0)


@pytest.mark.parametrize(("phone", "problem"), [
    ("+447700900123", None),
    ("+15005550006", None),
    ("07700 900123", "does not start with + and a country code"),
    ("+44 7700 900123", "contains characters other than digits after the +"),
    ("+0447700900123", "a country code never starts with 0"),
    ("+1234567", "has 7 digits (E.164 allows 8 to 15)"),
    ("+1234567890123456", "has 16 digits (E.164 allows 8 to 15)"),
    ("", "no phone number"),
    (None, "no phone number"),
])
def test_e164_names_what_is_wrong(phone: str | None, problem: str | None) -> None:
    assert e164_problem(phone) == problem


def consent(*suppressions: Suppression, custom: str | None = None,
            state: str = "UNSUBSCRIBED") -> KlaviyoConsent:
    return KlaviyoConsent("p1", "a@example.com", None, state, None, "API", None, custom,
                          tuple(suppressions))


def test_only_an_optout_newer_than_the_opt_in_blocks() -> None:
    older = Suppression("UNSUBSCRIBE", T - timedelta(days=1))
    newer = Suppression("SPAM_COMPLAINT", T + timedelta(seconds=1))
    assert newer_optout(T, [older]) is None
    assert newer_optout(T, [older, newer]) == newer
    assert newer_optout(T, []) is None
    assert newer_optout(None, [older]) == older  # unknown opt-in time: never override


def test_our_own_suppressions_are_not_opt_outs() -> None:
    job = Suppression("USER_SUPPRESSED", T)
    theirs = Suppression("UNSUBSCRIBE", T)
    held = consent(job, theirs)
    assert is_ours(job, held, {"a@example.com"}, "klaviyo-sync")
    assert not is_ours(theirs, held, {"a@example.com"}, "klaviyo-sync")
    assert not is_ours(job, held, set(), "klaviyo-sync")  # not in our suppressions table
    assert their_optouts(held, {"a@example.com"}, "klaviyo-sync") == [theirs]
    tagged = consent(theirs, custom="klaviyo-sync")
    assert their_optouts(tagged, set(), "klaviyo-sync") == []


def test_historical_by_the_threshold_and_who_is_wanted() -> None:
    assert is_historical(T - timedelta(hours=25), T, 24.0)
    assert not is_historical(T - timedelta(hours=23), T, 24.0)
    assert not is_historical(None, T, 24.0)

    def who(**kw: object) -> ConsentCustomer:
        base = {"id": "1", "email": "A@Example.com", "email_opt_in": True,
                "status": "Active"}
        return ConsentCustomer(Customer(**{**base, **kw}), T, None, False, T, 1)  # type: ignore[arg-type]

    assert who().email == "a@example.com"
    assert wants_email(who(), {"Dead"})
    assert not wants_email(who(status="Dead"), {"Dead"})
    assert not wants_email(who(email_opt_in=False), {"Dead"})
    assert not wants_email(who(email="not-an-address"), {"Dead"})


def test_subscription_body_historical_live_list_and_sms() -> None:
    profiles = [Subscribe("a@example.com", "+447700900123", T, sms_marketing=True),
                Subscribe("b@example.com", None, T - timedelta(days=3))]
    body = subscription_body(profiles, True, "klaviyo-sync", "L1")
    data = body["data"]
    assert data["type"] == "profile-subscription-bulk-create-job"
    assert data["attributes"]["historical_import"] is True
    assert data["attributes"]["custom_source"] == "klaviyo-sync"
    assert data["relationships"] == {"list": {"data": {"type": "list", "id": "L1"}}}
    first = data["attributes"]["profiles"]["data"][0]["attributes"]
    assert first["phone_number"] == "+447700900123"
    assert first["subscriptions"]["email"]["marketing"] == {
        "consent": "SUBSCRIBED", "consented_at": "2026-05-01T12:00:00+00:00"}
    assert first["subscriptions"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert "sms" not in data["attributes"]["profiles"]["data"][1]["attributes"][
        "subscriptions"]
    live = subscription_body(profiles[1:], False, "src")["data"]
    assert "historical_import" not in live["attributes"] and "relationships" not in live
    assert live["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"] == {
        "email": {"marketing": {"consent": "SUBSCRIBED"}}}
    with pytest.raises(ValueError, match="at most 1000"):
        subscription_body([profiles[1]] * 1001, False, "src")


def test_consent_read_from_a_profile_resource() -> None:
    resource = {"id": "P9", "attributes": {
        "email": "Ann@Example.com", "external_id": "42",
        "subscriptions": {"email": {"marketing": {
            "consent": "UNSUBSCRIBED", "consent_timestamp": "2026-05-01T12:00:00+00:00",
            "method": "EMAIL_UNSUBSCRIBE", "custom_method_detail": None,
            "suppression": [{"reason": "UNSUBSCRIBE",
                             "timestamp": "2026-05-02T08:00:00+02:00"}]}}}}}
    held = KlaviyoConsent.from_resource(resource)
    assert held.email == "ann@example.com" and held.external_id == "42"
    assert held.suppressions == (Suppression("UNSUBSCRIBE", datetime(2026, 5, 2, 6, 0)),)
    assert not held.subscribed
    params = suppressed_since_params(datetime(2026, 5, 2, 6, 0))
    assert params["filter"] == ("greater-or-equal(subscriptions.email.marketing.suppression"
                                ".timestamp,2026-05-02T06:00:00+00:00)")
    assert params["sort"] == "subscriptions.email.marketing.suppression.timestamp"


@pytest.mark.parametrize(("consent", "message"), [
    ({"sms_phone_column": "phone"}, "consent.sms_phone_column and consent.sms_opt_in_column"),
    ({"writeback_url": "sqlite:///b.db"}, "consent.writeback_url and"),
    ({"writeback_url": "sqlite:///b.db", "writeback_statement": "UPDATE customers SET x = 1"},
     "consent.writeback_statement: must use :customer_id or :email"),
    ({"custom_source": " "}, "consent.custom_source: must not be empty"),
    ({"sms_phone_column": "ph one", "sms_opt_in_column": "sms"},
     "consent.sms_phone_column"),
])
def test_consent_settings_errors_name_the_key(consent: dict[str, str], message: str) -> None:
    from klaviyo_sync import config
    from klaviyo_sync.exceptions import ConfigError

    with pytest.raises(ConfigError, match=message):
        config.from_mapping({"consent": consent})


def test_historical_threshold_defaults_to_the_backfill_threshold() -> None:
    from klaviyo_sync import config

    s = config.from_mapping({"log": {"backfill_after_hours": 6.0}})
    assert s.consent.historical_after_h(s.log) == 6.0
    s = config.from_mapping({"consent": {"historical_after_hours": 48.0}})
    assert s.consent.historical_after_h(s.log) == 48.0
