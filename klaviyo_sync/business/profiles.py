"""A customer as a Klaviyo profile: its attributes, encoded once, and their digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from itertools import compress, repeat
from operator import is_not, itemgetter, methodcaller, not_
from typing import Any, NamedTuple

from klaviyo_sync.business.customers import UPDATED_AT, CustomerRow, date_of, text_or_none
from klaviyo_sync.config import ProfileProperties

_text: Any = json.encoder.encode_basestring  # the C encoder json.dumps uses
_dumps = json.dumps
#: One profile resource with every attribute present, keys in order (the usual row).
_TEMPLATE = ('{"attributes":{"email":%s,"external_id":%s,"first_name":%s,"last_name":%s,'
             '"properties":%s},"type":"profile"}')
#: A raw row's id, its (email, first name, last name), its standard property values
#: (status, schedule, box, sign-up date).
_COLUMN_ID = itemgetter(0)
_NAME_COLUMNS = (itemgetter(1), itemgetter(2), itemgetter(3))
_PROPERTY_VALUES = itemgetter(slice(4, UPDATED_AT - 1))
#: An item's digest: 16 bytes of BLAKE2b, as hex.
_DIGEST = partial(hashlib.blake2b, digest_size=16)
_HEX = methodcaller("hexdigest")


class Profile(NamedTuple):
    """One customer's profile, ready for a bulk import body (a tuple: the initial sync
    makes a million of them)."""

    customer_id: str
    item: bytes  # the encoded profile resource, as it goes into the body
    digest: str  # of ``item``: equal digests, equal profiles


def profiles_of(ids: Sequence[str], items: Sequence[bytes], digests: Sequence[str]
                ) -> list[Profile]:
    """Profiles from the three lists :meth:`ProfileBuilder.build_columns` gives."""
    return list(map(tuple.__new__, repeat(Profile), zip(ids, items, digests, strict=True)))


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
        """The profiles of :meth:`build_columns`, one tuple each."""
        return profiles_of(*self.build_columns(rows))

    def build_columns(self, rows: Iterable[Sequence[Any]]
                      ) -> tuple[list[str], list[bytes], list[str]]:
        """The customer ids, encoded resources and digests of the profiles of
        :meth:`SqlCustomerReader.read_changed_raw` rows, as three lists (a page travels
        between processes so: see profile_pages.py): the same bytes as :meth:`build` of
        the same rows made into :class:`CustomerRow`. Attributes without
        a value are left out rather than sent as null: a bulk import's null does not
        clear a field everywhere.

        Built a column at a time: at a million customers every step per row counts, and
        ``map`` over C functions (the JSON string encoder, ``%`` with one template,
        the hash) steps through a page without running Python code per row. A row the
        template does not fit (no email, or one with spaces around it, or a name
        missing) is written out by :meth:`_item` in its place. The properties object is
        encoded once per combination of values.
        """
        rows = rows if isinstance(rows, list) else list(rows)
        count = len(rows)
        cache = self._cache
        if self._extras:
            keys = [tuple(row[4:UPDATED_AT - 1]) + tuple(row[UPDATED_AT + 1:])
                    for row in rows]
        else:
            keys = list(map(_PROPERTY_VALUES, rows))
        properties: list[Any] = list(map(cache.get, keys))
        if None in properties:
            for index in [i for i, found in enumerate(properties) if found is None]:
                properties[index] = cache.get(keys[index]) or self._raw_properties(
                    keys[index])
        ids = list(map(str, map(_COLUMN_ID, rows)))
        emails, firsts, lasts = (list(map(column, rows)) for column in _NAME_COLUMNS)
        odd: set[int] = set()
        for column in (emails, firsts, lasts):
            if not all(column):
                odd.update(compress(range(count), map(not_, column)))
                column[:] = [value or "" for value in column]
        # str.strip gives back the very string when there is nothing to strip.
        odd.update(compress(range(count), map(is_not, map(str.strip, emails), emails)))
        items = list(map(str.encode, map(_TEMPLATE.__mod__, zip(
            map(_text, emails), map(_text, ids), map(_text, firsts), map(_text, lasts),
            properties, strict=True))))
        for index in odd:
            items[index] = self._item(ids[index], rows[index], properties[index])
        return ids, items, list(map(_HEX, map(_DIGEST, items)))

    @staticmethod
    def _item(customer_id: str, row: Sequence[Any], properties: str) -> bytes:
        """One profile resource, attribute by attribute (the rows the template does not
        fit)."""
        email, first_name, last_name = row[1], row[2], row[3]
        head = '{"attributes":{'
        if email and email.strip():
            head += '"email":' + _text(email.strip()) + ","
        head += '"external_id":' + _text(customer_id)
        if first_name:
            head += ',"first_name":' + _text(first_name)
        if last_name:
            head += ',"last_name":' + _text(last_name)
        return (head + ',"properties":' + properties + '},"type":"profile"}').encode()

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
