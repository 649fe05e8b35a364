"""The dry-run sender: writes the exact request bodies it would send, one JSON line each.

Each line is ``{"method", "path", "items", "body"}`` and is fsync'd before the events it
carries are reported sent, so the outbox is as durable as Klaviyo's 202 would be: the
demo and audits can trust that every event acked in the queue is in the file.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.private_files import create_private
from klaviyo_sync.senders import payloads
from klaviyo_sync.senders.audit import AuditLog
from klaviyo_sync.senders.base import DeliveryReport, OutgoingEvent
from klaviyo_sync.senders.batching import DEFAULT_CAPS, BatchCaps
from klaviyo_sync.senders.catalog import CatalogAction, CatalogKind, JobAnswer, job_body, job_path
from klaviyo_sync.senders.consent import (
    SUBSCRIBE,
    KlaviyoConsent,
    Subscribe,
    subscription_body,
)
from klaviyo_sync.senders.delivery import deliver


class DryRunSender:
    """A Sender that appends request bodies to ``outbox`` instead of calling Klaviyo."""

    #: No request is made, so there is no request trail to keep.
    audit: AuditLog | None = None

    def __init__(self, outbox: str | Path, caps: BatchCaps = DEFAULT_CAPS) -> None:
        self.path = Path(outbox)
        self.caps = caps
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private(self.path)
            self._file = self.path.open("ab")
        except OSError as exc:
            raise ConfigError(f"sender.outbox: cannot write {self.path}: {exc.strerror}"
                              ) from exc
        self._lock = threading.Lock()
        self.requests = 0

    def write(self, path: str, body: dict[str, Any] | bytes, items: int) -> None:
        """Append one request (POST ``path`` with ``body``) to the outbox, fsync'd."""
        self._write(path, body, items)

    def _write(self, path: str, body: dict[str, Any] | bytes, items: int) -> None:
        raw = body if isinstance(body, bytes) else payloads.encode(body)
        head = json.dumps({"method": "POST", "path": path, "items": items},
                          allow_nan=False)[:-1]
        line = head.encode("utf-8") + b',"body":' + raw + b"}\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.requests += 1

    def write_request(self, path: str, body: dict[str, Any] | bytes, items: int) -> None:
        """Write one request of another kind (a profile import job) to the outbox."""
        self._write(path, body, items)

    def send_events(self, events: Sequence[OutgoingEvent]) -> DeliveryReport:
        return deliver(self, events, self.caps)

    def post_event(self, event: OutgoingEvent) -> None:
        self._write("/api/events", payloads.single_event_body(event), 1)

    def post_bulk(self, body: bytes, items: int) -> None:
        self._write("/api/event-bulk-create-jobs", body, items)

    def suppress_profiles(self, emails: Sequence[str]) -> None:
        if emails:
            self._write("/api/profile-suppression-bulk-create-jobs",
                        payloads.suppression_body(emails), len(emails))

    def unsuppress_profiles(self, emails: Sequence[str]) -> None:
        if emails:
            self._write("/api/profile-suppression-bulk-delete-jobs",
                        payloads.suppression_body(emails, delete=True), len(emails))

    def import_profile(self, profile: dict[str, Any]) -> None:
        self._write("/api/profile-import", payloads.profile_import_body(profile), 1)

    def request_profile_deletion(self, email: str | None = None,
                                 profile_id: str | None = None) -> int:
        # The outbox is a copy of our data too: the request is written with the
        # identifier masked, not in the clear (the person asked to be forgotten).
        masked = "[erased]" if email is not None else None
        self._write("/api/data-privacy-deletion-jobs",
                    payloads.deletion_body(masked, None if masked else "[erased]"), 1)
        return 202

    def find_profile_ids(self, external_id: str) -> list[str]:
        return []  # a dry run knows no Klaviyo profiles

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


class DryRunConsentApi:
    """The consent passes' API in dry-run: subscription jobs go to the outbox; Klaviyo's
    consent cannot be read, so every look-up finds nothing (no opt-out is known)."""

    reads = False

    def __init__(self, outbox: DryRunSender, custom_source: str, list_id: str = "") -> None:
        self.outbox = outbox
        self.custom_source = custom_source
        self.list_id = list_id

    def subscribe(self, profiles: Sequence[Subscribe], historical: bool) -> None:
        body = subscription_body(profiles, historical, self.custom_source, self.list_id)
        self.outbox.write_request(SUBSCRIBE, body, len(profiles))

    def consent_of(self, emails: Sequence[str]) -> dict[str, KlaviyoConsent]:
        return {}

    def suppressed_pages(self, since: datetime | None) -> Iterator[list[KlaviyoConsent]]:
        return iter(())

    def all_pages(self) -> Iterator[list[KlaviyoConsent]]:
        return iter(())

    def list_opt_in(self, list_id: str) -> str | None:
        return "unknown"  # cannot be read: the list is taken to exist
class DryRunCatalog:
    """The catalog API's dry-run counterpart: each job's exact body goes to the outbox.

    A job "completes" at once with no errors, and Klaviyo is taken to hold nothing, so a
    catalog pass under the dry-run sender records what it would have sent.
    """

    def __init__(self, sender: DryRunSender) -> None:
        self.sender = sender
        self.jobs = 0

    def post_job(self, kind: CatalogKind, action: CatalogAction,
                 resources: Sequence[dict[str, Any]]) -> str:
        self.sender.write(job_path(kind, action), job_body(kind, action, resources),
                          len(resources))
        self.jobs += 1
        return f"dry-run-{self.jobs}"

    def get_job(self, kind: CatalogKind, action: CatalogAction, job_id: str) -> JobAnswer:
        return JobAnswer(job_id=job_id, status="complete", total=0, completed=0, failed=0)

    def existing(self, kind: CatalogKind, external_ids: Iterable[str]) -> set[str]:
        return set()
