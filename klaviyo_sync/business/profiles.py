"""A customer as a Klaviyo profile: its attributes, encoded once, and their digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from klaviyo_sync.business.customers import UPDATED_AT, CustomerRow, date_of, text_or_none
from klaviyo_sync.config import ProfileProperties

_blake2b = hashlib.blake2b
_text: Any = json.encoder.encode_basestring  # the C encoder json.dumps uses
_dumps = json.dumps


class Profile(NamedTuple):
    """One customer's profile, ready for a bulk import body (a tuple: the initial sync
    makes a million of them)."""

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


#: Raw property values whose encoding may be cached by value: a cached key can then be
#: met only by equal values of these classes (never 1 for True, nor 1.0 for 1).
_CACHEABLE = frozenset((str, type(None), date))
#: Distinct property combinations kept encoded (schedule x status x box x sign-up day is
#: a few thousand in a real shop); past this the cache starts again.
_CACHE_MAX = 50_000


class ProfileBuilder:
    """Turns customer rows into profiles: email, external_id = customer id, names, and the
    custom properties named in ``[klaviyo.profile_properties]`` plus the extra columns.

    The resource is written out directly, byte for byte what ``profile_item`` (sorted keys,
    no spaces) makes of the same attributes: the initial sync of a million customers
    spends its time here. :meth:`build_raw` works on the reader's raw rows and encodes
    each combination of property values once.
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
        self._extras = bool(extra_columns)
        self._cache: dict[Sequence[Any], str] = {}

    def build(self, row: CustomerRow) -> Profile:
        """The profile of one customer already read into a :class:`CustomerRow` (retries,
        resumed requests): its values laid out as a raw row, the conversions of which
        leave them as they are."""
        c = row.customer
        return self.build_raw([(c.id, c.email, c.first_name, c.last_name, c.status,
                                c.schedule, c.box, c.signup_date, c.email_opt_in,
                                row.raw_updated_at, *row.extras)])[0]

    def build_raw(self, rows: Iterable[Sequence[Any]]) -> list[Profile]:
        """Profiles of :meth:`SqlCustomerReader.read_changed_raw` rows: the same bytes as
        :meth:`build` of the same rows made into :class:`CustomerRow`. One loop with its
        names bound locally and the properties object encoded once per combination of
        values: at a million customers every step per row counts. Attributes without a
        value are left out rather than sent as null: a bulk import's null does not
        clear a field everywhere."""
        cache = self._cache
        extras = self._extras
        text, blake2b, new = _text, _blake2b, tuple.__new__
        out: list[Profile] = []
        append = out.append
        for row in rows:
            # status, schedule, box, sign-up date, then the extra columns
            key = row[4:UPDATED_AT - 1]
            if extras:
                key = tuple(key) + tuple(row[UPDATED_AT + 1:])
            properties = cache.get(key)
            if properties is None:
                properties = self._raw_properties(key)
            customer_id = row[0]
            if customer_id.__class__ is not str:
                customer_id = str(customer_id)
            email, first_name, last_name = row[1], row[2], row[3]
            head = '{"attributes":{'
            if email and email.strip():
                head += '"email":' + text(email.strip()) + ","
            head += '"external_id":' + text(customer_id)
            if first_name:
                head += ',"first_name":' + text(first_name)
            if last_name:
                head += ',"last_name":' + text(last_name)
            item = (head + ',"properties":' + properties + '},"type":"profile"}').encode()
            append(new(Profile, (customer_id, item,
                                 blake2b(item, digest_size=16).hexdigest())))
        return out

    def _raw_properties(self, key: Sequence[Any]) -> str:
        """The properties object of raw (status, schedule, box, sign-up date, extras)
        values, converted as :meth:`Customer.from_values` does; kept for its key when the
        values are of a class whose equal values encode alike."""
        status, schedule, box, signup = key[:4]
        if signup is not None and (isinstance(signup, datetime)
                                   or not isinstance(signup, date)):
            signup = date_of(signup)
        properties = self._properties([
            text_or_none(schedule), status, text_or_none(box),
            signup.isoformat() if signup else None, *key[4:]])
        if all(value.__class__ in _CACHEABLE for value in key):
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[tuple(key)] = properties
        return properties

    def _properties(self, values: Sequence[Any]) -> str:
        """The encoded properties object, keys in order (``values`` in slot order)."""
        keys = self._keys
        return "{" + ",".join(
            keys[i] + ("null" if values[i] is None else _value(values[i]))
            for i in self._order) + "}"
