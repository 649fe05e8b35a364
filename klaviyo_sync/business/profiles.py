"""A customer as a Klaviyo profile: its attributes, encoded once, and their digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from klaviyo_sync.business.customers import CustomerRow
from klaviyo_sync.config import ProfileProperties

_blake2b = hashlib.blake2b
_text: Any = json.encoder.encode_basestring  # the C encoder json.dumps uses
_dumps = json.dumps


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


def _value(value: Any) -> str:
    if value.__class__ is str:
        return str(_text(value))
    return _dumps(_plain(value), ensure_ascii=False)


class ProfileBuilder:
    """Turns customer rows into profiles: email, external_id = customer id, names, and the
    custom properties named in ``[klaviyo.profile_properties]`` plus the extra columns.

    The resource is written out directly, byte for byte what ``profile_item`` (sorted keys,
    no spaces) makes of the same attributes, at a third of its cost: the initial sync of a
    million customers spends its time here.
    """

    def __init__(self, names: ProfileProperties, extra: Mapping[str, str],
                 extra_columns: Sequence[str]) -> None:
        # (sort position, property name): standard ones by slot, extras by column order.
        slots = [names.schedule, names.status, names.box, names.signup_date]
        slots += [extra[column] for column in extra_columns]
        if len(set(slots)) != len(slots):
            raise ValueError(f"profile property names repeat: {slots}")
        self._order = sorted(range(len(slots)), key=lambda i: slots[i])
        self._keys = [_text(name) + ":" for name in slots]

    def build(self, row: CustomerRow) -> Profile:
        c = row.customer
        values = [c.schedule, c.status, c.box,
                  c.signup_date.isoformat() if c.signup_date else None, *row.extras]
        keys = self._keys
        properties = ",".join(
            keys[i] + ("null" if values[i] is None else _value(values[i]))
            for i in self._order)
        # Absent rather than null: a bulk import's null is not "clear it" everywhere.
        head = '{"attributes":{'
        if c.email and c.email.strip():
            head += '"email":' + _text(c.email.strip()) + ","
        head += '"external_id":' + _text(c.id)
        if c.first_name:
            head += ',"first_name":' + _text(c.first_name)
        if c.last_name:
            head += ',"last_name":' + _text(c.last_name)
        item = (head + ',"properties":{' + properties + '}},"type":"profile"}').encode()
        return Profile(c.id, item, _blake2b(item, digest_size=16).hexdigest())
