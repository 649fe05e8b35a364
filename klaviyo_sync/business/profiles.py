"""A customer as a Klaviyo profile: its attributes, encoded once, and their digest."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from klaviyo_sync.business.customers import CustomerRow
from klaviyo_sync.config import ProfileProperties
from klaviyo_sync.senders.profiles import profile_item

_blake2b = hashlib.blake2b


@dataclass(frozen=True, slots=True)
class Profile:
    """One customer's profile, ready for a bulk import body."""

    customer_id: str
    item: bytes  # the encoded profile resource, as it goes into the body
    digest: str  # of ``item``: equal digests, equal profiles


def _plain(value: Any) -> Any:
    """A business value as JSON has it (dates as ISO text, decimals as numbers)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class ProfileBuilder:
    """Turns customer rows into profiles: email, external_id = customer id, names, and the
    custom properties named in ``[klaviyo.profile_properties]`` plus the extra columns."""

    def __init__(self, names: ProfileProperties, extra: Mapping[str, str],
                 extra_columns: Sequence[str]) -> None:
        self.names = names
        # The reader returns extra values in extra_columns' order.
        self._extra = [(extra[column]) for column in extra_columns]

    def build(self, row: CustomerRow) -> Profile:
        c = row.customer
        n = self.names
        properties: dict[str, Any] = {
            n.schedule: c.schedule, n.status: c.status, n.box: c.box,
            n.signup_date: c.signup_date.isoformat() if c.signup_date else None,
        }
        for name, value in zip(self._extra, row.extras, strict=True):
            properties[name] = _plain(value)
        attributes: dict[str, Any] = {"external_id": c.id, "properties": properties}
        # Absent rather than null: a bulk import's null is not "clear it" everywhere.
        if c.email:
            attributes["email"] = c.email.strip()
        if c.first_name:
            attributes["first_name"] = c.first_name
        if c.last_name:
            attributes["last_name"] = c.last_name
        item = profile_item(attributes)
        return Profile(c.id, item, _blake2b(item, digest_size=16).hexdigest())
