"""The read endpoints: GET /api/metrics and GET /api/events, with filters and cursor pages.

Faithful to the parts of Klaviyo's API a client needs for "missed signups": filters
``equals(metric_id,"...")``, ``equals(profile_id,"...")`` and comparisons on ``datetime``
or ``timestamp``, joined by ``and(...)`` or commas; ``include=profile,metric``; sparse
``fields[...]``; ``sort``; ``page[size]`` (events: 1-1000, default 200; metrics: fixed 200)
and an opaque ``page[cursor]`` followed through ``links.next``.
"""

from __future__ import annotations

import base64
import binascii
import json
import operator
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from tests.klaviyo_standin.account import Metric, RecordedEvent
from tests.klaviyo_standin.jsonapi import Call, Reply, error

PAGE_SIZE_DEFAULT = 200
PAGE_SIZE_MAX = 1000
METRICS_PAGE_SIZE = 200

_TERM = re.compile(r"^([a-z-]+)\(\s*([\w.]+)\s*,\s*(.+?)\s*\)$")
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "greater-or-equal": operator.ge, "greater-than": operator.gt,
    "less-or-equal": operator.le, "less-than": operator.lt,
}


class FilterError(ValueError):
    """A filter the stand-in (like Klaviyo) does not accept; the message is the detail."""


def split_terms(text: str) -> list[str]:
    """The comma-separated terms of a filter, unwrapping one ``and(...)``."""
    text = text.strip()
    if text.startswith("and(") and text.endswith(")"):
        text = text[4:-1]
    terms, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:index].strip())
            start = index + 1
    terms.append(text[start:].strip())
    return [term for term in terms if term]


def parse_terms(text: str, allowed: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """(operator, field, raw value) for each term; refuses fields/operators not allowed."""
    parsed = []
    for term in split_terms(text):
        match = _TERM.match(term)
        if match is None:
            raise FilterError(f"Invalid filter term {term!r}.")
        op, field, value = match.groups()
        if op not in allowed.get(field, set()):
            raise FilterError(f"Filter {op!r} on field {field!r} is not supported.")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        parsed.append((op, field, value))
    return parsed


def _moment(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise FilterError(f"Invalid datetime {raw!r} in filter.") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_EVENT_FILTERS = {"metric_id": {"equals"}, "profile_id": {"equals"},
                  "datetime": set(_COMPARISONS), "timestamp": set(_COMPARISONS)}


def _event_predicate(text: str | None) -> tuple[str | None, Callable[[RecordedEvent], bool]]:
    """The metric id the filter names (to narrow the scan) and a predicate for the rest."""
    checks: list[Callable[[RecordedEvent], bool]] = []
    metric_id = None
    for op, field, raw in parse_terms(text or "", _EVENT_FILTERS):
        if field == "metric_id":
            metric_id = raw
        elif field == "profile_id":
            checks.append(_profile_is(raw))
        else:
            checks.append(_time_check(_COMPARISONS[op], field, raw))
    return metric_id, lambda event: all(check(event) for check in checks)


def _profile_is(profile_id: str) -> Callable[[RecordedEvent], bool]:
    return lambda event: event.profile_id == profile_id


def _time_check(compare: Callable[[Any, Any], bool], field: str, raw: str
                ) -> Callable[[RecordedEvent], bool]:
    if field == "datetime":
        bound = _moment(raw)
        return lambda event: compare(event.time, bound)
    try:
        number = float(raw)
    except ValueError as exc:
        raise FilterError(f"Invalid timestamp {raw!r} in filter.") from exc
    return lambda event: compare(event.time.timestamp(), number)


def _cursor_encode(position: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _cursor_decode(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise FilterError("Invalid page cursor.") from exc
    if not isinstance(position, list):
        raise FilterError("Invalid page cursor.")
    return position


def _links(call: Call, next_cursor: str | None) -> dict[str, str]:
    base = f"{call.standin.base_url}{call.path}"
    query = {name: values[-1] for name, values in call.query.items()}
    links = {"self": f"{base}?{urlencode(query)}" if query else base}
    if next_cursor is not None:
        links["next"] = f"{base}?{urlencode({**query, 'page[cursor]': next_cursor})}"
    return links


def _sparse(attributes: dict[str, Any], fields: str | None) -> dict[str, Any]:
    if not fields:
        return attributes
    wanted = set(fields.split(","))
    return {k: v for k, v in attributes.items() if k in wanted}


def get_metrics(call: Call) -> Reply:
    """GET /api/metrics: every metric, 200 a page (Klaviyo cannot filter them by name)."""
    try:
        terms = parse_terms(call.param("filter") or "", {"integration.name": {"equals"},
                                                         "integration.category": {"equals"}})
        cursor = call.param("page[cursor]")
        start = int(_cursor_decode(cursor)[0]) if cursor else 0
    except (FilterError, ValueError, IndexError) as exc:
        return error(400, str(exc), parameter="filter")
    with call.standin.account.lock:
        metrics = list(call.standin.account.metrics.values())
    if any(value != "API" for _, _, value in terms):
        metrics = []  # every metric the stand-in holds came in through the API
    page = metrics[start:start + METRICS_PAGE_SIZE]
    more = start + METRICS_PAGE_SIZE < len(metrics)
    next_cursor = _cursor_encode([start + METRICS_PAGE_SIZE]) if more else None
    data = [_metric_resource(call, metric) for metric in page]
    return Reply(200, {"data": data, "links": _links(call, next_cursor)}, items=len(data))


def _metric_resource(call: Call, metric: Metric) -> dict[str, Any]:
    created = metric.created.isoformat()
    attributes = {"name": metric.name, "created": created, "updated": created,
                  "integration": {"object": "integration", "id": "0rG4eQ", "name": "API",
                                  "category": "API"}}
    return {"type": "metric", "id": metric.id,
            "attributes": _sparse(attributes, call.param("fields[metric]")),
            "links": {"self": f"{call.standin.base_url}/api/metrics/{metric.id}/"}}


def get_events(call: Call) -> Reply:
    """GET /api/events: filtered, sorted, one cursor page, with included resources."""
    try:
        metric_id, keep = _event_predicate(call.param("filter"))
        size = int(call.param("page[size]") or PAGE_SIZE_DEFAULT)
        if not 1 <= size <= PAGE_SIZE_MAX:
            raise FilterError(f"page[size] must be between 1 and {PAGE_SIZE_MAX}.")
        cursor = call.param("page[cursor]")
        after = _cursor_decode(cursor) if cursor else None
    except (FilterError, ValueError) as exc:
        return error(400, str(exc), parameter="filter")
    sort = call.param("sort") or "datetime"
    if sort not in ("datetime", "-datetime", "timestamp", "-timestamp"):
        return error(400, f"Invalid sort {sort!r}.", parameter="sort")
    account = call.standin.account
    with account.lock:
        pool = account.events_by_metric.get(metric_id, []) if metric_id else account.events
        chosen = [event for event in pool if keep(event)]
        profiles = dict(account.profile_state)
        metric_names = {m.id: m for m in account.metrics.values()}
    descending = sort.startswith("-")
    chosen.sort(key=_event_position, reverse=descending)
    if after is not None:
        position = tuple(after)
        chosen = [e for e in chosen
                  if (_event_position(e) < position if descending
                      else _event_position(e) > position)]
    page, more = chosen[:size], len(chosen) > size
    next_cursor = _cursor_encode(list(_event_position(page[-1]))) if more else None
    document: dict[str, Any] = {"data": [_event_resource(call, e) for e in page],
                                "links": _links(call, next_cursor)}
    include = set(filter(None, (call.param("include") or "").split(",")))
    if include - {"profile", "metric"}:
        return error(400, f"Cannot include {sorted(include)!r}.", parameter="include")
    included: list[dict[str, Any]] = []
    if "profile" in include:
        for profile_id in dict.fromkeys(e.profile_id for e in page):
            included.append(_profile_resource(call, profile_id, profiles.get(profile_id, {})))
    if "metric" in include:
        for metric_id_ in dict.fromkeys(e.metric_id for e in page):
            included.append(_metric_resource(call, metric_names[metric_id_]))
    if include:
        document["included"] = included
    return Reply(200, document, items=len(page))


def _event_position(event: RecordedEvent) -> tuple[str, str]:
    return (event.time.isoformat(), event.event_id)


def _event_resource(call: Call, event: RecordedEvent) -> dict[str, Any]:
    base = call.standin.base_url
    properties = dict(event.properties)
    if event.unique_id is not None:
        properties["$event_id"] = event.unique_id
    if event.value is not None:
        properties["$value"] = event.value
    attributes = {
        "timestamp": int(event.time.timestamp()),
        "event_properties": properties,
        "datetime": event.time.isoformat(),
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, event.event_id)),
    }
    relationships = {
        "profile": {"data": {"type": "profile", "id": event.profile_id},
                    "links": {"self": f"{base}/api/events/{event.event_id}/relationships/profile/",
                              "related": f"{base}/api/events/{event.event_id}/profile/"}},
        "metric": {"data": {"type": "metric", "id": event.metric_id},
                   "links": {"self": f"{base}/api/events/{event.event_id}/relationships/metric/",
                             "related": f"{base}/api/events/{event.event_id}/metric/"}},
    }
    return {"type": "event", "id": event.event_id,
            "attributes": _sparse(attributes, call.param("fields[event]")),
            "relationships": relationships,
            "links": {"self": f"{base}/api/events/{event.event_id}/"}}


def _profile_resource(call: Call, profile_id: str, state: dict[str, Any]) -> dict[str, Any]:
    attributes = {name: state.get(name) for name in (
        "email", "phone_number", "external_id", "first_name", "last_name")}
    attributes["properties"] = dict(state.get("properties", {}))
    return {"type": "profile", "id": profile_id,
            "attributes": _sparse(attributes, call.param("fields[profile]")),
            "links": {"self": f"{call.standin.base_url}/api/profiles/{profile_id}/"}}
