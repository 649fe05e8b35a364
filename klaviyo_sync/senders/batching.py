"""Grouping claimed events into requests: bulk jobs within Klaviyo's caps, singles for few.

A bulk job holds at most ``max_events`` events and ``max_bytes`` of body, keeps a
profile's events together, and never carries one unique_id twice (Klaviyo fails the whole
request, nothing processed). A handful of events goes out as single POST /api/events
instead: that endpoint has its own, larger quota (350/s against the bulk endpoint's
10/s), so the few events of live traffic do not spend the bulk quota a replay needs.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from klaviyo_sync.senders.base import OutgoingEvent
from klaviyo_sync.senders.payloads import BulkEncoder, utf8_len

#: Bytes of a bulk body besides its entries' content (envelope, entry wrappers).
_ENVELOPE_BYTES = 200
_ENTRY_BYTES = 160


class JobKind(enum.StrEnum):
    SINGLE = "single"  # one POST /api/events
    BULK = "bulk"  # one POST /api/event-bulk-create-jobs


@dataclass(frozen=True)
class Job:
    kind: JobKind
    events: tuple[OutgoingEvent, ...]


@dataclass(frozen=True)
class BatchCaps:
    max_events: int = 1000
    max_bytes: int = 5_000_000
    single_threshold: int = 3


def plan(events: Sequence[OutgoingEvent], caps: BatchCaps,
         encoder: BulkEncoder | None = None) -> list[Job]:
    """Requests that together carry every event exactly once."""
    encoder = encoder or BulkEncoder()
    if len(events) <= caps.single_threshold:
        return [Job(JobKind.SINGLE, (e,)) for e in events]
    jobs: list[list[OutgoingEvent]] = []
    current: list[OutgoingEvent] = []
    current_ids: set[str] = set()
    current_bytes = _ENVELOPE_BYTES
    spill: list[OutgoingEvent] = []  # repeats of a unique_id: they go in a later job

    def close() -> None:
        nonlocal current, current_ids, current_bytes
        if current:
            jobs.append(current)
        current, current_ids, current_bytes = [], set(), _ENVELOPE_BYTES

    pending: Sequence[OutgoingEvent] = events
    while pending:
        for group in encoder.entries(pending):
            entry_bytes = _ENTRY_BYTES + utf8_len(encoder.profile_json(group[0]))
            first_in_entry = True
            for event in group:
                if event.unique_id in current_ids:
                    spill.append(event)
                    continue
                size = utf8_len(encoder.fragment(event)) + 1
                extra = size + (entry_bytes if first_in_entry else 0)
                if current and (len(current) >= caps.max_events
                                or current_bytes + extra > caps.max_bytes):
                    close()
                    extra = size + entry_bytes
                current.append(event)
                current_ids.add(event.unique_id)
                current_bytes += extra
                first_in_entry = False
        close()
        pending, spill = spill, []
    return [Job(JobKind.SINGLE if len(j) == 1 else JobKind.BULK, tuple(j))
            for j in _expand_small(jobs, caps)]


def _expand_small(jobs: list[list[OutgoingEvent]], caps: BatchCaps) -> list[list[OutgoingEvent]]:
    # A tail job small enough for singles is sent as singles: one request per event.
    out: list[list[OutgoingEvent]] = []
    for job in jobs:
        if len(job) <= caps.single_threshold:
            out.extend([e] for e in job)
        else:
            out.append(job)
    return out


DEFAULT_CAPS = BatchCaps()
