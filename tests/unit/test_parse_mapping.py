"""Event types -> Klaviyo properties, profile attributes, value and currency."""

from __future__ import annotations

from typing import Any

import pytest

from klaviyo_sync.config import KNOWN_EVENT_TYPES, LogSettings
from klaviyo_sync.exceptions import ParseError
from klaviyo_sync.parsers import LineParser, LogEntry
from klaviyo_sync.parsers.mapping import MAX_PROPERTIES, MAX_STRING_BYTES

EVENTS = {name: name for name in KNOWN_EVENT_TYPES} | {"gift.sent": "Gift Sent"}


def parse(rest: str, event_type: str, *, currency: str = "USD", zone: str = "UTC") -> LogEntry:
    parser = LineParser(LogSettings(timezone=zone), EVENTS, default_currency=currency)
    entry = parser.parse(f"2020-05-15 12:35:32 {event_type} {rest}".encode())
    assert entry is not None
    return entry


def test_started_signup_is_like_started_checkout() -> None:
    entry = parse(
        "customer=1141260 email=ktest@kivalogic.com first_name=test last_name=mcgee box=705 "
        "value=47.95 phone=+15555550100",
        "started.signup",
    )
    assert entry.customer_id == "1141260"
    assert entry.email == "ktest@kivalogic.com"
    assert entry.properties == {
        "Email": "ktest@kivalogic.com", "FirstName": "test", "LastName": "mcgee", "Box": "705",
    }
    assert entry.profile == {
        "first_name": "test", "last_name": "mcgee", "phone_number": "+15555550100",
    }
    assert (entry.value, entry.value_currency) == (47.95, "USD")


def test_contact_form_with_only_an_email() -> None:
    entry = parse(
        'email=who@example.com name="Ann Lee" subject="Box late" message="Where is \\"it\\"?"',
        "contact.form",
    )
    assert (entry.customer_id, entry.email) == (None, "who@example.com")
    assert entry.properties == {
        "Email": "who@example.com", "Name": "Ann Lee", "Subject": "Box late",
        "Message": 'Where is "it"?',
    }
    assert entry.value is None and entry.value_currency is None


def test_failed_payment_amount_is_the_value() -> None:
    entry = parse('customer=9 amount=19.99 order=A-100 reason="card declined"', "failed.payment")
    assert entry.properties == {"OrderId": "A-100", "Reason": "card declined"}
    assert (entry.value, entry.value_currency) == (19.99, "USD")


def test_referral_credit() -> None:
    entry = parse("customer=9 amount=10 referred_customer=77", "referral.credit")
    assert entry.properties == {"ReferredCustomerId": "77"}
    assert entry.value == 10.0
    alias = parse("customer=9 amount=10 referred=78", "referral.credit")
    assert alias.properties == {"ReferredCustomerId": "78"}


def test_shipping_email() -> None:
    entry = parse("customer=9 order=A-1 tracking=1Z999 carrier=UPS", "shipping.email")
    assert entry.properties == {"OrderId": "A-1", "TrackingNumber": "1Z999", "Carrier": "UPS"}
    assert entry.value is None


def test_cancelled_with_and_without_a_date() -> None:
    given = parse('customer=9 reason="moving away" date=2020-06-01', "cancelled")
    assert given.properties == {"Reason": "moving away", "CancellationDate": "2020-06-01"}
    # Default: the entry's own date as the log wrote it (local), not the UTC date.
    own = parse("customer=9", "cancelled", zone="Pacific/Auckland")
    assert own.occurred_at.date().isoformat() == "2020-05-15"
    assert own.properties == {"CancellationDate": "2020-05-15"}
    late = LineParser(LogSettings(timezone="America/Los_Angeles"), EVENTS).parse(
        b"2020-05-15 20:00:00 cancelled customer=9"
    )
    assert late is not None and late.occurred_at.date().isoformat() == "2020-05-16"
    assert late.properties["CancellationDate"] == "2020-05-15"


def test_cancellation_date_must_be_a_date() -> None:
    with pytest.raises(ParseError, match="not a date"):
        parse("customer=9 date=soon", "cancelled")


def test_unknown_keys_pass_through_unchanged() -> None:
    entry = parse("customer=9 box=705 coupon=SPRING plan_weeks=4", "started.signup")
    assert entry.properties["coupon"] == "SPRING"
    assert entry.properties["plan_weeks"] == "4"


def test_custom_type_keeps_its_keys_but_still_finds_the_profile() -> None:
    entry = parse("customer=9 email=a@example.com box=705 note=hi value=5", "gift.sent")
    assert entry.metric == "Gift Sent"
    assert (entry.customer_id, entry.email, entry.value) == ("9", "a@example.com", 5.0)
    assert entry.properties == {"box": "705", "note": "hi"}


@pytest.mark.parametrize(
    ("rest", "value"),
    [
        ("amount=19.99", 19.99),
        ("amount=-5", -5.0),
        ("amount=.5", 0.5),
        ("amount=1234567.891", 1234567.891),
        ("total=12", 12.0),
        ("amount=", None),
    ],
)
def test_amounts(rest: str, value: float | None) -> None:
    assert parse(f"customer=1 {rest}", "failed.payment").value == value


def test_value_wins_over_amount_which_passes_through() -> None:
    entry = parse("customer=1 value=40 amount=35", "started.signup")
    assert entry.value == 40.0
    assert entry.properties["amount"] == "35"


@pytest.mark.parametrize("amount", ["abc", "$19.99", "1,000.00", "nan", "1e3", "19.99EUR"])
def test_a_non_numeric_amount_is_a_parse_error(amount: str) -> None:
    with pytest.raises(ParseError, match="not a decimal amount") as caught:
        parse(f"customer=1 amount={amount}", "failed.payment")
    assert caught.value.event_type == "failed.payment"


def test_currency() -> None:
    assert parse("amount=5 currency=eur", "failed.payment").value_currency == "EUR"
    assert parse("amount=5", "failed.payment", currency="GBP").value_currency == "GBP"
    with pytest.raises(ParseError, match="ISO 4217"):
        parse("amount=5 currency=euro", "failed.payment")


def test_empty_identity_values_are_absent() -> None:
    entry = parse('customer= email=" "', "cancelled")
    assert (entry.customer_id, entry.email) == (None, None)


def test_klaviyo_limits_are_checked_here() -> None:
    many = " ".join(f"k{i}=v" for i in range(MAX_PROPERTIES + 1))
    with pytest.raises(ParseError, match="at most 400"):
        parse(many, "gift.sent")
    # 400 fields of its own plus the CancellationDate the mapping adds
    exactly = " ".join(f"k{i}=v" for i in range(MAX_PROPERTIES))
    with pytest.raises(ParseError, match="401 properties"):
        parse(exactly, "cancelled")
    assert len(parse(exactly, "gift.sent").properties) == MAX_PROPERTIES
    with pytest.raises(ParseError, match="property strings"):
        parse(f"customer=1 message={'é' * (MAX_STRING_BYTES // 2 + 1)}", "contact.form")


def test_to_new_event() -> None:
    entry = parse("customer=1 email=a@example.com first_name=A value=3", "started.signup")
    event = entry.to_new_event(backfill=True)
    expected: dict[str, Any] = {
        "unique_id": entry.unique_id, "metric": "started.signup", "source": "log",
        "occurred_at": entry.occurred_at, "customer_id": "1", "email": "a@example.com",
        "profile": {"first_name": "A"}, "value": 3.0, "value_currency": "USD",
        "backfill": True, "properties": entry.properties,
    }
    assert {k: getattr(event, k) for k in expected} == expected
    assert parse("customer=1", "cancelled").to_new_event(backfill=False).profile is None


@pytest.mark.parametrize(
    ("phone", "profile", "properties"),
    [
        ("+15555550100", {"phone_number": "+15555550100"}, {}),
        ('"+1 (555) 555-0100"', {"phone_number": "+15555550100"}, {}),
        ("+44.20.7946.0958", {"phone_number": "+442079460958"}, {}),
        ("555-0100", {}, {"Phone": "555-0100"}),  # no country: Klaviyo would refuse it
        ("+0123456789", {}, {"Phone": "+0123456789"}),
    ],
)
def test_phone_goes_to_the_profile_only_when_klaviyo_accepts_it(
    phone: str, profile: dict[str, str], properties: dict[str, str]
) -> None:
    entry = parse(f"customer=1 phone={phone}", "shipping.email")
    assert entry.profile == profile
    assert entry.properties == properties
