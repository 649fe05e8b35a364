"""The consent read endpoints: GET /api/profiles (with subscriptions) and GET /api/lists.

Profiles: every profile the account holds, however it came (events, profile-import,
suppression and subscription jobs, test opt-outs). Filters ``equals``/``any`` on ``id``,
``email``, ``phone_number``, ``external_id``; comparisons on
``subscriptions.email.marketing.suppression.timestamp`` and ``equals`` on its ``reason``;
``sort`` by ``id``, ``email`` or that timestamp (either direction); ``page[size]`` 1-100
(default 20); ``additional-fields[profile]=subscriptions`` adds the consent records.
Lists: 10 a page at most, ``equals``/``any`` on ``id`` and ``name``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.klaviyo_standin.consent import ChannelConsent, KlaviyoList
from tests.klaviyo_standin.jsonapi import Call, Reply, error
from tests.klaviyo_standin.reads import (
    _COMPARISONS,
    FilterError,
    _cursor_decode,
    _cursor_encode,
    _links,
    _moment,
    _sparse,
    parse_terms,
)

PROFILES_PAGE_DEFAULT = 20
PROFILES_PAGE_MAX = 100
LISTS_PAGE_MAX = 10
SUPPRESSION_TIMESTAMP = "subscriptions.email.marketing.suppression.timestamp"
SUPPRESSION_REASON = "subscriptions.email.marketing.suppression.reason"
_IDENTITY = {"equals", "any"}
_PROFILE_FILTERS = {"id": _IDENTITY, "email": _IDENTITY, "phone_number": _IDENTITY,
                    "external_id": _IDENTITY, SUPPRESSION_TIMESTAMP: set(_COMPARISONS),
                    SUPPRESSION_REASON: {"equals"}}
_PROFILE_SORTS = ("id", "email", SUPPRESSION_TIMESTAMP)
_ATTRIBUTES = ("email", "phone_number", "external_id", "first_name", "last_name",
               "organization", "locale", "title", "image", "location")

Row = tuple[str, dict[str, Any], ChannelConsent | None, ChannelConsent | None]


def _values(op: str, raw: str) -> list[str]:
    if op == "equals":
        return [raw]
    try:
        found = json.loads(raw.replace("'", '"'))
    except ValueError as exc:
        raise FilterError(f"any() takes a list of strings, not {raw!r}.") from exc
    if not isinstance(found, list) or not all(isinstance(v, str) for v in found):
        raise FilterError(f"any() takes a list of strings, not {raw!r}.")
    return found


def _latest_suppression(email: ChannelConsent | None) -> datetime | None:
    if email is None or not email.suppression:
        return None
    return max(s.timestamp for s in email.suppression)


def _profile_check(op: str, field: str, raw: str) -> Callable[[Row], bool]:
    if field == SUPPRESSION_TIMESTAMP:
        compare, bound = _COMPARISONS[op], _moment(raw)
        return lambda row: any(compare(s.timestamp, bound)
                               for s in (row[2].suppression if row[2] else []))
    if field == SUPPRESSION_REASON:
        return lambda row: any(s.reason == raw for s in (row[2].suppression if row[2] else []))
    wanted = set(_values(op, raw))
    if field == "email":
        wanted = {value.lower() for value in wanted}
        return lambda row: str(row[1].get("email") or "").lower() in wanted
    if field == "id":
        return lambda row: row[0] in wanted
    return lambda row: row[1].get(field) in wanted


def _sort_key(field: str) -> Callable[[Row], list[Any]]:
    if field == "email":
        return lambda row: [str(row[1].get("email") or ""), row[0]]
    if field == SUPPRESSION_TIMESTAMP:
        def by_suppression(row: Row) -> list[Any]:
            latest = _latest_suppression(row[2])
            return [latest.isoformat() if latest else "", row[0]]
        return by_suppression
    return lambda row: ["", row[0]]


def _page_size(call: Call, default: int, maximum: int) -> int:
    raw = call.param("page[size]")
    try:
        size = int(raw) if raw is not None else default
    except ValueError as exc:
        raise FilterError(f"page[size] must be a whole number, not {raw!r}.") from exc
    if not 1 <= size <= maximum:
        raise FilterError(f"page[size] must be between 1 and {maximum}.")
    return size


def _after(rows: list[Any], key: Callable[[Any], list[Any]], cursor: str | None,
           descending: bool) -> list[Any]:
    if cursor is None:
        return rows
    position = _cursor_decode(cursor)
    return [row for row in rows
            if (key(row) < position if descending else key(row) > position)]


def get_profiles(call: Call) -> Reply:
    """GET /api/profiles: filtered, sorted, one cursor page of profiles."""
    sort = call.param("sort") or "id"
    if sort.lstrip("-") not in _PROFILE_SORTS:
        return error(400, f"Sort {sort!r} is not supported; use one of {_PROFILE_SORTS} "
                     "(- for descending).", parameter="sort")
    extra = set(filter(None, (call.param("additional-fields[profile]") or "").split(",")))
    if extra - {"subscriptions"}:
        return error(400, f"additional-fields[profile] {sorted(extra)!r} is not supported.",
                     parameter="additional-fields[profile]")
    try:
        checks = [_profile_check(op, field, raw)
                  for op, field, raw in parse_terms(call.param("filter") or "",
                                                    _PROFILE_FILTERS)]
        size = _page_size(call, PROFILES_PAGE_DEFAULT, PROFILES_PAGE_MAX)
        account = call.standin.account
        with account.lock:
            rows: list[Row] = [(pid, dict(state), _copy(account.consent.email.get(pid)),
                                _copy(account.consent.sms.get(pid)))
                               for pid, state in account.profile_state.items()]
        rows = [row for row in rows if all(check(row) for check in checks)]
        key, descending = _sort_key(sort.lstrip("-")), sort.startswith("-")
        rows.sort(key=key, reverse=descending)
        rows = _after(rows, key, call.param("page[cursor]"), descending)
    except FilterError as exc:
        return error(400, str(exc), parameter="filter")
    page, more = rows[:size], len(rows) > size
    next_cursor = _cursor_encode(key(page[-1])) if more else None
    data = [_profile_resource(call, row, "subscriptions" in extra) for row in page]
    return Reply(200, {"data": data, "links": _links(call, next_cursor)}, items=len(data))


def _copy(record: ChannelConsent | None) -> ChannelConsent | None:
    if record is None:
        return None
    return ChannelConsent(record.consent, record.consent_timestamp, record.method,
                          record.method_detail, record.custom_method_detail,
                          record.double_optin, record.last_updated, list(record.suppression),
                          [dict(s) for s in record.list_suppressions])


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def email_marketing(record: ChannelConsent | None) -> dict[str, Any]:
    """``subscriptions.email.marketing`` as Klaviyo shows it."""
    record = record or ChannelConsent()
    return {
        "can_receive_email_marketing": record.consent == "SUBSCRIBED" and not record.suppression,
        "consent": record.consent,
        "consent_timestamp": _iso(record.consent_timestamp),
        "last_updated": _iso(record.last_updated),
        "method": record.method,
        "method_detail": record.method_detail or "",
        "custom_method_detail": record.custom_method_detail,
        "double_optin": record.double_optin,
        "suppression": [{"reason": s.reason, "timestamp": s.timestamp.isoformat()}
                        for s in record.suppression],
        "list_suppressions": [{**s, "timestamp": s["timestamp"].isoformat()}
                              for s in record.list_suppressions],
    }


def _sms_marketing(record: ChannelConsent | None) -> dict[str, Any]:
    record = record or ChannelConsent()
    return {"can_receive_sms_marketing": record.consent == "SUBSCRIBED",
            "consent": record.consent, "consent_timestamp": _iso(record.consent_timestamp),
            "method": record.method, "method_detail": record.method_detail or "",
            "last_updated": _iso(record.last_updated)}


def _profile_resource(call: Call, row: Row, with_subscriptions: bool) -> dict[str, Any]:
    profile_id, state, email, sms = row
    attributes: dict[str, Any] = {name: state.get(name) for name in _ATTRIBUTES}
    attributes["properties"] = dict(state.get("properties") or {})
    if with_subscriptions:
        attributes["subscriptions"] = {"email": {"marketing": email_marketing(email)},
                                       "sms": {"marketing": _sms_marketing(sms)}}
    return {"type": "profile", "id": profile_id,
            "attributes": _sparse(attributes, call.param("fields[profile]")),
            "links": {"self": f"{call.standin.base_url}/api/profiles/{profile_id}/"}}


_LIST_FILTERS = {"id": _IDENTITY, "name": _IDENTITY}


def get_lists(call: Call) -> Reply:
    """GET /api/lists: the account's lists, at most 10 a page, in creation order."""
    try:
        terms = parse_terms(call.param("filter") or "", _LIST_FILTERS)
        wanted = [(field, set(_values(op, raw))) for op, field, raw in terms]
        size = _page_size(call, LISTS_PAGE_MAX, LISTS_PAGE_MAX)
        cursor = call.param("page[cursor]")
        start = int(_cursor_decode(cursor)[0]) if cursor else 0
    except (FilterError, ValueError, IndexError) as exc:
        return error(400, str(exc), parameter="filter")
    with call.standin.account.lock:
        lists = list(call.standin.account.consent.lists.values())
    lists = [kept for kept in lists
             if all(getattr(kept, field) in values for field, values in wanted)]
    page = lists[start:start + size]
    next_cursor = _cursor_encode([start + size]) if start + size < len(lists) else None
    data = [_list_resource(call, kept) for kept in page]
    return Reply(200, {"data": data, "links": _links(call, next_cursor)}, items=len(data))


def _list_resource(call: Call, kept: KlaviyoList) -> dict[str, Any]:
    created = kept.created.isoformat()
    attributes = {"name": kept.name, "created": created, "updated": created,
                  "opt_in_process": kept.opt_in_process}
    return {"type": "list", "id": kept.id,
            "attributes": _sparse(attributes, call.param("fields[list]")),
            "links": {"self": f"{call.standin.base_url}/api/lists/{kept.id}/"}}
