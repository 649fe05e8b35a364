"""Request bodies in Klaviyo's JSON:API shapes (see KLAVIYO.md): events, bulk jobs,
suppressions, profiles. Pure functions: no I/O."""

from __future__ import annotations

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
        "time": iso_utc(event.time),
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
    return json.dumps([event.profile, event.backfill], sort_keys=True, default=str)


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
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8")
