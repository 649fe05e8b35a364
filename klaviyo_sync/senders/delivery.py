"""Delivering a batch: plan the requests, send them, and take a refused bulk apart.

A 400 on a bulk request rejects all of it, but usually one event is at fault. Where
Klaviyo's error points at an event (``source.pointer``), that event is tried alone on the
single endpoint, which confirms the verdict with its own error (or accepts it: a wrong
guess costs one request, never an event), and the others go again as a bulk. Without a
pointer the batch is halved until the offenders stand alone. A unique_id Klaviyo says it
already recorded is an event that was delivered before (a resend after a crash): acked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Protocol

from klaviyo_sync.exceptions import (
    AuthError,
    PayloadTooLargeError,
    RateLimitedError,
    RejectedSendError,
    RetryableSendError,
)
from klaviyo_sync.senders.base import AuthFailure, DeliveryReport, OutgoingEvent
from klaviyo_sync.senders.batching import BatchCaps, JobKind, plan
from klaviyo_sync.senders.payloads import BulkEncoder

_POINTER = re.compile(r"events-bulk-create/data/(\d+)(?:/attributes/events/data/(\d+))?")
_ALREADY = re.compile(r"already|duplicate|exists|recorded", re.IGNORECASE)


class EventTransport(Protocol):
    def post_event(self, event: OutgoingEvent) -> None: ...

    def post_bulk(self, body: bytes, items: int) -> None: ...


def deliver(transport: EventTransport, events: Sequence[OutgoingEvent], caps: BatchCaps
            ) -> DeliveryReport:
    """Send ``events``; every event ends in exactly one bucket of the report."""
    report = DeliveryReport()
    encoder = BulkEncoder()
    for job in plan(events, caps, encoder):
        if job.kind is JobKind.SINGLE:
            _single(transport, job.events[0], report)
        else:
            _bulk(transport, list(job.events), report, encoder)
    return report


def _run(transport: EventTransport, events: list[OutgoingEvent], report: DeliveryReport,
         encoder: BulkEncoder) -> None:
    if len(events) == 1:
        _single(transport, events[0], report)
    elif events:
        _bulk(transport, events, report, encoder)


def _single(transport: EventTransport, event: OutgoingEvent, report: DeliveryReport) -> None:
    if report.halted:
        report.deferred.append(event.queue_id)
        return
    report.requests += 1
    try:
        transport.post_event(event)
    except RejectedSendError as exc:  # incl. 413: one event cannot be split further
        report.dead[event.queue_id] = str(exc)
    except (RateLimitedError, AuthError, RetryableSendError) as exc:
        _outcome_for_all(exc, [event], report)
    else:
        report.sent.append(event.queue_id)


def _bulk(transport: EventTransport, events: list[OutgoingEvent], report: DeliveryReport,
          encoder: BulkEncoder) -> None:
    # A loop, not a recursion per refusal: Klaviyo names one offender per refusal, so a
    # batch with hundreds of them would otherwise exceed Python's recursion limit.
    while len(events) > 1:
        if report.halted:
            report.deferred += [e.queue_id for e in events]
            return
        body, entries = encoder.bulk(events)
        report.requests += 1
        try:
            transport.post_bulk(body, len(events))
        except PayloadTooLargeError:
            half = len(events) // 2
            _run(transport, events[:half], report, encoder)
            _run(transport, events[half:], report, encoder)
        except RejectedSendError as exc:
            events = _isolate(transport, events, entries, exc, report, encoder)
            continue
        except (RateLimitedError, AuthError, RetryableSendError) as exc:
            _outcome_for_all(exc, events, report)
        else:
            report.sent += [e.queue_id for e in events]
        return
    _run(transport, events, report, encoder)


def _outcome_for_all(exc: Exception, events: list[OutgoingEvent], report: DeliveryReport
                     ) -> None:
    # A 429 that outlasted the inline waits, or refused credentials, halts the delivery:
    # these events and every later one go back to the queue with no attempt spent.
    ids = [e.queue_id for e in events]
    if isinstance(exc, RateLimitedError):
        report.deferred += ids
        report.deferred_for_s = max(report.deferred_for_s, exc.retry_after_s)
        report.halted = True
    elif isinstance(exc, AuthError):
        report.deferred += ids
        report.auth_failure = AuthFailure.from_error(exc)
        report.halted = True
    else:
        for queue_id in ids:
            report.retry[queue_id] = str(exc)


def _isolate(transport: EventTransport, events: list[OutgoingEvent],
             entries: list[list[OutgoingEvent]], exc: RejectedSendError,
             report: DeliveryReport, encoder: BulkEncoder) -> list[OutgoingEvent]:
    """Deal with the events a refusal points at; returns the rest, to go again in bulk."""
    suspects: dict[int, OutgoingEvent] = {}
    recorded: set[int] = set()
    for error in exc.errors:
        pointer = str((error.get("source") or {}).get("pointer") or "")
        match = _POINTER.search(pointer)
        if not match or int(match.group(1)) >= len(entries):
            continue
        entry = entries[int(match.group(1))]
        if match.group(2) is not None:
            if int(match.group(2)) >= len(entry):
                continue
            pointed = [entry[int(match.group(2))]]
        else:
            pointed = entry
        text = f"{error.get('code', '')} {error.get('detail', '')}"
        for event in pointed:
            suspects[event.queue_id] = event
            if "unique_id" in text.lower() and _ALREADY.search(text):
                recorded.add(event.queue_id)
    if not suspects:
        if len(events) == 1:
            report.dead[events[0].queue_id] = str(exc)
            return []
        half = len(events) // 2
        _run(transport, events[:half], report, encoder)
        _run(transport, events[half:], report, encoder)
        return []
    report.already_recorded += sorted(recorded)
    rest = [e for e in events if e.queue_id not in suspects]
    for queue_id, event in suspects.items():
        if queue_id not in recorded:
            _single(transport, event, report)
    if recorded:
        # A batch resent after a crash may repeat many recorded events, and Klaviyo names
        # one per refusal: events that may have gone before take the single endpoint
        # (which drops a repeat quietly); events never sent before stay in bulk.
        for event in [e for e in rest if e.resend]:
            _single(transport, event, report)
        rest = [e for e in rest if not e.resend]
    return rest


class ProfileTransport(Protocol):
    def import_profile(self, profile: dict[str, Any]) -> None: ...


def deliver_profiles(sender: ProfileTransport, events: Sequence[OutgoingEvent]
                     ) -> DeliveryReport:
    """``generate_events = false``: one profile update per distinct profile, no events.
    Each event's outcome is its profile's."""
    report = DeliveryReport()
    groups: dict[str, list[int]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    for event in events:
        key = json.dumps(event.profile, sort_keys=True, default=str, allow_nan=False)
        groups.setdefault(key, []).append(event.queue_id)
        profiles[key] = event.profile
    for key, ids in groups.items():
        if report.halted:
            report.deferred += ids
            continue
        report.requests += 1
        try:
            sender.import_profile(profiles[key])
        except RejectedSendError as exc:
            report.dead.update({i: str(exc) for i in ids})
        except RateLimitedError as exc:
            report.deferred += ids
            report.deferred_for_s = max(report.deferred_for_s, exc.retry_after_s)
            report.halted = True
        except AuthError as exc:
            report.deferred += ids
            report.auth_failure = AuthFailure.from_error(exc)
            report.halted = True
        except RetryableSendError as exc:
            report.retry.update({i: str(exc) for i in ids})
        else:
            report.sent += ids
    return report
