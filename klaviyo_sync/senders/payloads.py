"""Request bodies in Klaviyo's JSON:API shapes (docs/architecture.md): events, bulk jobs,
suppressions, profiles. Pure functions: no I/O."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from klaviyo_sync.clock import iso_utc
from klaviyo_sync.senders.base import OutgoingEvent

#: Klaviyo's cap on emails per suppression job.
SUPPRESS_MAX = 100


def event_attributes(event: OutgoingEvent) -> dict[str, Any]:
    """The attributes an event has in both the single and the bulk endpoint."""
    attrs: dict[str, Any] = {
        "metric": {"data": {"type": "metric", "attributes": {"name": event.metric}}},
        "properties": event.properties,
        "time": iso_utc(event.time, to_second=True),
        "unique_id": event.unique_id,
    }
    if event.value is not None:
        attrs["value"] = event.value
        if event.value_currency:
            attrs["value_currency"] = event.value_currency
    return attrs


def profile_resource(profile: dict[str, Any]) -> dict[str, Any]:
    return {"type": "profile", "attributes": profile}


def single_event_body(event: OutgoingEvent) -> dict[str, Any]:
    """POST /api/events."""
    attrs = event_attributes(event)
    attrs["profile"] = {"data": profile_resource(event.profile)}
    if event.backfill:
        attrs["backfill"] = True
    return {"data": {"type": "event", "attributes": attrs}}


def profile_key(event: OutgoingEvent) -> str:
    """Events with equal keys share one bulk entry (same profile, same backfill flag)."""
    return json.dumps([event.profile, event.backfill], sort_keys=True, default=str,
                      allow_nan=False)


def bulk_entries(events: Sequence[OutgoingEvent]) -> list[tuple[str, list[OutgoingEvent]]]:
    """Events grouped per profile, in first-seen order (keeps a customer's events together)."""
    groups: dict[str, list[OutgoingEvent]] = {}
    for event in events:
        groups.setdefault(profile_key(event), []).append(event)
    return list(groups.items())


def bulk_body(events: Sequence[OutgoingEvent]
              ) -> tuple[dict[str, Any], list[list[OutgoingEvent]]]:
    """POST /api/event-bulk-create-jobs, and the events of each entry in body order: how a
    JSON pointer in an error (``/data/attributes/events-bulk-create/data/3/...``) maps back
    to events."""
    data = []
    order: list[list[OutgoingEvent]] = []
    for _key, group in bulk_entries(events):
        first = group[0]
        data.append({
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": profile_resource(first.profile)},
                "events": {"data": [{"type": "event", "attributes": event_attributes(e)}
                                    for e in group]},
                "backfill": first.backfill,
            },
        })
        order.append(group)
    body = {"data": {"type": "event-bulk-create-job",
                     "attributes": {"events-bulk-create": {"data": data}}}}
    return body, order


# One encoder each, made once: json.dumps() with any option builds a new JSONEncoder on
# every call, which cost more than encoding a small event.
# allow_nan=False everywhere: NaN and Infinity are not JSON, and Klaviyo refuses the body.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str,
                          allow_nan=False).encode
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str, allow_nan=False).encode
_string = json.encoder.encode_basestring  # a str as JSON, what _dumps does to a str


@functools.lru_cache(maxsize=256)
def _event_head(metric: str) -> str:
    return ('{"type":"event","attributes":{"metric":{"data":{"type":"metric","attributes":'
            '{"name":' + _string(metric) + '}}},"properties":')


def _event_json(event: OutgoingEvent) -> str:
    """``_dumps({"type": "event", "attributes": event_attributes(event)})``, assembled
    from parts: the metric's part is made once per metric, not once per event."""
    text = (_event_head(event.metric) + _dumps(event.properties) + ',"time":"'
            + iso_utc(event.time, to_second=True)
            + '","unique_id":' + _string(event.unique_id))
    if event.value is not None:
        text += ',"value":' + _dumps(event.value)
        if event.value_currency:
            text += ',"value_currency":' + _string(event.value_currency)
    return text + "}}"


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8, without encoding it when it is ASCII (the usual case)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


class BulkEncoder:
    """Encodes bulk requests by joining per-event JSON fragments, each made once.

    Planning needs every event's encoded size (the 5 MB cap) and grouping needs its
    profile key; encoding the body again afterwards would serialise every event three or
    four times. One encoder per delivery memoises both by queue id, and a split after a
    refusal reuses them.
    """

    def __init__(self) -> None:
        self._fragments: dict[int, str] = {}
        self._keys: dict[int, str] = {}

    def fragment(self, event: OutgoingEvent) -> str:
        text = self._fragments.get(event.queue_id)
        if text is None:
            text = _event_json(event)
            self._fragments[event.queue_id] = text
        return text

    def key(self, event: OutgoingEvent) -> str:
        """Group key; it starts with the profile's JSON, which the body reuses."""
        key = self._keys.get(event.queue_id)
        if key is None:
            key = _canonical(event.profile) + ("|1" if event.backfill else "|0")
            self._keys[event.queue_id] = key
        return key

    def profile_json(self, event: OutgoingEvent) -> str:
        return self.key(event)[:-2]

    def entries(self, events: Sequence[OutgoingEvent]) -> list[list[OutgoingEvent]]:
        groups: dict[str, list[OutgoingEvent]] = {}
        for event in events:
            groups.setdefault(self.key(event), []).append(event)
        return list(groups.values())

    def bulk(self, events: Sequence[OutgoingEvent]) -> tuple[bytes, list[list[OutgoingEvent]]]:
        """The exact bytes of :func:`bulk_body` for ``events``, and its entries."""
        entries = self.entries(events)
        parts = []
        for group in entries:
            first = group[0]
            parts.append(
                '{"type":"event-bulk-create","attributes":{"profile":{"data":'
                '{"type":"profile","attributes":' + self.profile_json(first) + "}}"
                + ',"events":{"data":[' + ",".join(self.fragment(e) for e in group)
                + ']},"backfill":' + ("true" if first.backfill else "false") + "}}")
        text = ('{"data":{"type":"event-bulk-create-job","attributes":{"events-bulk-create":'
                '{"data":[' + ",".join(parts) + "]}}}}")
        return text.encode("utf-8"), entries


def suppression_body(emails: Iterable[str], delete: bool = False) -> dict[str, Any]:
    """POST /api/profile-suppression-bulk-create-jobs (or -delete-jobs to unsuppress)."""
    kind = "profile-suppression-bulk-delete-job" if delete else \
        "profile-suppression-bulk-create-job"
    profiles = [{"type": "profile", "attributes": {"email": e}} for e in emails]
    return {"data": {"type": kind, "attributes": {"profiles": {"data": profiles}}}}


def profile_import_body(profile: dict[str, Any]) -> dict[str, Any]:
    """POST /api/profile-import."""
    return {"data": profile_resource(profile)}


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (compact separators: 5 MB is a byte cap)."""
    return _dumps(body).encode("utf-8")


def deletion_body(email: str | None = None, profile_id: str | None = None) -> dict[str, Any]:
    """A data-privacy deletion job for exactly one identifier (Klaviyo refuses two)."""
    if (email is None) == (profile_id is None):
        raise ValueError("a deletion job names exactly one of email or profile id")
    profile: dict[str, Any] = {"type": "profile", "attributes": {}}
    if email is not None:
        profile["attributes"]["email"] = email
    else:
        profile["id"] = profile_id
    return {"data": {"type": "data-privacy-deletion-job",
                     "attributes": {"profile": {"data": profile}}}}
