"""The one place that maps the log's event types and keys to what Klaviyo receives.

Keys every event type understands (whatever the format: kv pairs, JSON fields, regex
groups):

==================  ========================================================
``customer``        the business customer id (profile ``external_id`` later)
``email``           the profile's email
``first_name``      profile ``first_name``
``last_name``       profile ``last_name``
``phone``           profile ``phone_number`` when it is E.164 once blanks, dashes,
                    dots and brackets are dropped (``+1 (555) 010-0100``); otherwise
                    the property ``Phone``, since Klaviyo refuses a whole event whose
                    profile has a malformed phone number
``value``,          the event's monetary ``value`` (the first present, in this
``amount``,         order; a decimal number such as ``47.95``, anything else is
``total``           a parse error). The others, if also present, pass through.
``currency``        ``value_currency`` (ISO 4217; default ``[klaviyo]
                    default_currency``)
==================  ========================================================

Event properties, TitleCase like Klaviyo's own metrics (``Started Checkout``, ...):

===================  ====================================================================
``started.signup``   Email, FirstName, LastName, Box; value = ``value`` (as the front
                     end's Started Checkout carries it)
``contact.form``     Email, Name, Subject, Message (often only an email, no customer)
``failed.payment``   OrderId (``order=``), Reason; value = ``amount``
``referral.credit``  ReferredCustomerId (``referred_customer=``, or ``referred=``);
                     value = ``amount``
``shipping.email``   OrderId (``order=``), TrackingNumber (``tracking=``), Carrier
``cancelled``        Reason, CancellationDate (``date=`` as YYYY-MM-DD, default: the
                     entry's own date in ``[log] timezone``)
===================  ====================================================================

Any other key passes through as a property under its own name, unchanged; event types
of your own listed in ``[events]`` get all their keys that way. An entry with neither a
customer id nor an email is still an entry: the sender dead-letters it with that
reason, where it is visible and retryable, rather than it vanishing here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from klaviyo_sync.exceptions import ParseError
from klaviyo_sync.parsers.entry import LogEntry
from klaviyo_sync.parsers.times import LogTimezone

#: Log key -> property name, per event type.
PROPERTY_NAMES: dict[str, dict[str, str]] = {
    "started.signup": {
        "email": "Email", "first_name": "FirstName", "last_name": "LastName", "box": "Box",
    },
    "contact.form": {"email": "Email", "name": "Name", "subject": "Subject", "message": "Message"},
    "failed.payment": {"order": "OrderId", "reason": "Reason"},
    "referral.credit": {
        "referred_customer": "ReferredCustomerId", "referred": "ReferredCustomerId",
    },
    "shipping.email": {"order": "OrderId", "tracking": "TrackingNumber", "carrier": "Carrier"},
    "cancelled": {"reason": "Reason", "date": "CancellationDate"},
}

MONEY_KEYS = ("value", "amount", "total")
PROFILE_KEYS = {"first_name": "first_name", "last_name": "last_name", "phone": "phone_number"}
#: Klaviyo's limits on event properties (docs/architecture.md, "Klaviyo API facts the
#: senders rely on"): refused payloads are rejected here, with the reason, instead of
#: dead-lettering at the API.
MAX_PROPERTIES = 400
MAX_STRING_BYTES = 100_000

_EPOCH = datetime(1970, 1, 1)
_CUSTOMER, _EMAIL, _PROFILE, _MONEY, _CURRENCY, _RENAMED = range(6)
_ROLES = {"customer": _CUSTOMER, "email": _EMAIL, "currency": _CURRENCY}
_ROLES.update(dict.fromkeys(PROFILE_KEYS, _PROFILE))
_ROLES.update(dict.fromkeys(MONEY_KEYS, _MONEY))
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_CURRENCY_CODE = re.compile(r"[A-Za-z]{3}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")

#: What :meth:`EventMapping.entry_fields` returns: LogEntry's fields, in its order.
EntryFields = tuple[str, str, str, datetime, str | None, str | None, dict[str, Any],
                    dict[str, Any], float | None, str | None]


def _plan(event_type: str) -> dict[str, tuple[int, str | None]]:
    """Key -> (role, property name) for one event type; a key not in it passes through.

    One lookup per field instead of three: this runs for every field of every line.
    """
    names = PROPERTY_NAMES.get(event_type, {})
    plan: dict[str, tuple[int, str | None]] = {
        key: (_RENAMED, name) for key, name in names.items()
    }
    plan.update({key: (role, names.get(key)) for key, role in _ROLES.items()})
    return plan


class EventMapping:
    """Turns an event type's fields into a :class:`LogEntry` (see the module docstring).

    ``unique_ids`` (event type -> template, ``[unique_ids]``) replaces the line's own id as
    the event's unique_id, e.g. ``"{customer}_{unix}"``: the id a front end sends for the
    same moment, so that Klaviyo keeps one event of the two. Types not listed keep the
    line id unchanged.
    """

    def __init__(self, events: Mapping[str, str], default_currency: str = "USD",
                 unique_ids: Mapping[str, str] | None = None) -> None:
        self.metrics = dict(events)
        self.default_currency = default_currency
        self._plans = {event_type: _plan(event_type) for event_type in self.metrics}
        self._templates = {t: template for t, template in (unique_ids or {}).items()
                           if template != "{line}"}

    def to_entry(
        self, unique_id: str, event_type: str, occurred_at: datetime,
        fields: Mapping[str, Any], timezone: LogTimezone, line_bytes: int | None = None,
    ) -> LogEntry:
        """The entry for a synced event type; raises ParseError for unusable fields.

        ``line_bytes`` (the raw line's length) lets short lines skip the size checks.
        """
        return LogEntry(*self.entry_fields(unique_id, event_type, occurred_at, fields,
                                           timezone, line_bytes))

    def entry_fields(
        self, unique_id: str, event_type: str, occurred_at: datetime,
        fields: Mapping[str, Any], timezone: LogTimezone, line_bytes: int | None = None,
    ) -> EntryFields:
        """:meth:`to_entry`'s fields as a plain tuple (the bulk ingest needs no object)."""
        plan = self._plans.get(event_type)
        if plan is None:
            plan = self._plans[event_type] = _plan(event_type)
        properties: dict[str, Any] = {}
        profile: dict[str, Any] = {}
        customer_id = email = currency = None
        money: dict[str, Any] | None = None
        for key, raw in fields.items():
            step = plan.get(key)
            if step is None:
                properties[key] = raw
                continue
            role, name = step
            if role == _RENAMED:
                properties[name] = raw  # type: ignore[index]
                continue
            if role == _MONEY:
                if money is None:
                    money = {}
                money[key] = raw
                continue
            if raw.__class__ is str:  # the common case, inlined: this runs per field
                text = raw.strip() or None
                if text is not None and "\ufffd" in text:
                    raise ParseError(f"{key}: invalid UTF-8 in {text!r}", event_type)
            else:
                text = _identity_text(key, raw, event_type)
            if role == _CUSTOMER:
                customer_id = text
            elif role == _EMAIL:
                email = text
            elif role == _PROFILE:
                if text is not None:
                    if key != "phone":
                        profile[PROFILE_KEYS[key]] = text
                    elif (phone := _e164(text)) is not None:
                        profile["phone_number"] = phone
                    else:
                        properties["Phone"] = text
            else:
                currency = _currency(text, event_type)
            if text is not None and name is not None:
                properties[name] = text
        value = None if money is None else _value(money, properties, event_type)
        if event_type == "cancelled":
            properties["CancellationDate"] = _cancellation_date(
                properties.get("CancellationDate"), occurred_at, timezone, event_type
            )
        if len(properties) > MAX_PROPERTIES:
            raise ParseError(
                f"{len(properties)} properties: Klaviyo accepts at most {MAX_PROPERTIES}",
                event_type,
            )
        if self._templates and event_type in self._templates:
            unique_id = _templated_id(self._templates[event_type], unique_id, event_type,
                                      occurred_at, customer_id or email)
        if line_bytes is None or line_bytes * 3 > MAX_STRING_BYTES:
            # A line decodes to at most 3 bytes of UTF-8 per byte (U+FFFD for a bad one),
            # so only long lines can hold a string over the limit.
            _check_string_sizes(properties, event_type)
        return (
            unique_id, event_type, self.metrics[event_type], occurred_at, customer_id, email,
            properties, profile, value,
            (currency or self.default_currency) if value is not None else None,
        )


def _templated_id(template: str, line_id: str, event_type: str, occurred_at: datetime,
                  who: str | None) -> str:
    """A ``[unique_ids]`` template filled in; the line id when it needs a customer the line
    does not name (ids of different people must not meet in the queue's unique index)."""
    if who is None and "{customer}" in template:
        return line_id
    unix = int((occurred_at.replace(tzinfo=None) - _EPOCH).total_seconds())
    return template.format_map({"line": line_id, "customer": who or "", "unix": unix,
                                "type": event_type})[:128]


def _value(money: dict[str, Any], properties: dict[str, Any], event_type: str) -> float | None:
    if len(money) == 1:  # the usual line: one amount, nothing to pass through
        ((key, raw),) = money.items()
        return _amount(key, raw, event_type)
    value = None
    for key in MONEY_KEYS:
        if key not in money:
            continue
        if value is None:
            value = _amount(key, money[key], event_type)
        else:
            properties[key] = money[key]
    return value


def _identity_text(key: str, raw: Any, event_type: str) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        text = raw.strip()
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        text = str(raw)
    else:
        raise ParseError(f"{key}: expected text, got {type(raw).__name__}", event_type)
    if "\ufffd" in text:
        raise ParseError(f"{key}: invalid UTF-8 in {text!r}", event_type)
    return text or None


def _e164(text: str) -> str | None:
    phone = _PHONE_PUNCTUATION.sub("", text)
    return phone if _E164.fullmatch(phone) else None


def _amount(key: str, raw: Any, event_type: str) -> float | None:
    if isinstance(raw, str):  # the common case first
        text = raw.strip()
        if not text:
            return None
        if _DECIMAL.fullmatch(text):
            amount = float(text)  # correctly rounded, like float(Decimal(text))
            if amount - amount == 0.0:  # finite: 400 digits overflow to infinity
                return amount
            raise ParseError(f"{key}: amount out of range: {_head(text)}", event_type)
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            amount = float(raw)
        except OverflowError:  # a JSON integer of hundreds of digits
            amount = math.inf
        if math.isfinite(amount):
            return amount
        raise ParseError(f"{key}: amount out of range: {_head(str(raw))}", event_type)
    elif raw is None:
        return None
    raise ParseError(f"{key}: not a decimal amount: {raw!r}", event_type)


def _head(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _currency(text: str | None, event_type: str) -> str | None:
    if text is None:
        return None
    if not _CURRENCY_CODE.fullmatch(text):
        raise ParseError(f"currency: not an ISO 4217 code: {text!r}", event_type)
    return text.upper()


def _cancellation_date(
    raw: Any, occurred_at: datetime, timezone: LogTimezone, event_type: str
) -> str:
    if raw is None or raw == "":
        return timezone.local_date(occurred_at).isoformat()
    if isinstance(raw, str):
        text = raw.strip()
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(text).date().isoformat()
        except ValueError:
            pass
    raise ParseError(f"date: not a date (YYYY-MM-DD): {raw!r}", event_type)


def _check_string_sizes(properties: dict[str, Any], event_type: str) -> None:
    for key, value in properties.items():
        # A str of n characters is at least n bytes in UTF-8 and at most 4n.
        if (
            isinstance(value, str) and len(value) * 4 > MAX_STRING_BYTES
            and len(value.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES
        ):
            raise ParseError(
                f"{key}: {len(value.encode('utf-8', 'surrogatepass'))} bytes; Klaviyo "
                f"accepts property strings of at most {MAX_STRING_BYTES} bytes",
                event_type,
            )
