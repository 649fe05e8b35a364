"""What the stand-in's Klaviyo account holds: events, metrics, profiles, suppressions, jobs,
consent (kept in :mod:`~tests.klaviyo_standin.consent`) and deletion requests.

All state lives here behind one lock, so that checking a bulk request for repeated
unique_ids and recording it happen atomically even when several senders post at once.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tests.klaviyo_standin import clock
from tests.klaviyo_standin.consent import (
    SUPPRESSION_JOB_METHOD,
    SUPPRESSION_JOB_METHOD_DETAIL,
    ConsentBook,
    KlaviyoList,
)

if TYPE_CHECKING:
    from tests.klaviyo_standin.privacy import DeletionRequest

_ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_OTHER_IDENTIFIERS = ("phone_number", "external_id")


@dataclass(frozen=True)
class RecordedEvent:
    """One event as the account recorded it (the first of its profile/metric/unique_id)."""

    metric: str
    profile: dict[str, Any]
    unique_id: str | None
    time: datetime
    properties: dict[str, Any]
    value: float | None
    value_currency: str | None
    backfill: bool
    received_at: datetime
    event_id: str = ""
    metric_id: str = ""
    profile_id: str = ""


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the stand-in answered (status 0: connection dropped on purpose)."""

    method: str
    path: str
    status: int
    items: int
    at: datetime
    duration_s: float
    error_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Metric:
    id: str
    name: str
    created: datetime


@dataclass(frozen=True)
class Job:
    """An asynchronous job (suppression, profile import); the stand-in completes it at once."""

    id: str
    type: str
    total_count: int
    created_at: datetime


@dataclass(frozen=True)
class EventCandidate:
    """An event of a request, validated, not yet recorded; ``pointer`` locates it in the body."""

    pointer: str
    profile: dict[str, Any]
    metric: str
    unique_id: str | None
    time: datetime
    properties: dict[str, Any]
    value: float | None
    value_currency: str | None
    backfill: bool

    def dedupe_key(self) -> str:
        # Without a unique_id Klaviyo dedupes on the time to the second.
        return self.unique_id if self.unique_id is not None else f"time:{self.time.isoformat()}"


@dataclass(frozen=True)
class Refusal:
    """Why a whole request is refused: the offending item's pointer and Klaviyo's detail."""

    pointer: str
    detail: str


def _identifiers(profile: dict[str, Any]) -> list[tuple[str, str]]:
    email = profile.get("email")
    found = [("email", email.lower())] if email else []
    found += [(kind, profile[kind]) for kind in _OTHER_IDENTIFIERS if profile.get(kind)]
    if profile.get("id"):
        found.insert(0, ("id", profile["id"]))
    return found


def _import_key(profile: dict[str, Any]) -> str:
    """The identifier a profile import is kept under in the by-identifier view."""
    return str(profile.get("email") or profile.get("external_id")
               or profile.get("phone_number") or profile.get("id"))


def _merge_into(book: dict[str, dict[str, Any]], key: str, profile: dict[str, Any]) -> None:
    stored = book.get(key)
    if stored is None:
        stored = book[key] = {"properties": {}}
    _merge(stored, profile)


def _merge(state: dict[str, Any], profile: dict[str, Any]) -> None:
    """Attributes of ``profile`` over ``state``; its properties merged into state's."""
    properties = state["properties"]
    state.update(profile)
    state["properties"] = properties
    properties.update(profile.get("properties") or {})


@dataclass
class Account:
    """The account's state. Public attributes are read by the facade under :attr:`lock`."""

    seed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: list[RecordedEvent] = field(default_factory=list)
    events_by_metric: dict[str, list[RecordedEvent]] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)
    metrics: dict[str, Metric] = field(default_factory=dict)  # by name, in creation order
    suppressed: dict[str, datetime] = field(default_factory=dict)
    unsuppressed: dict[str, datetime] = field(default_factory=dict)
    suppression_requests: list[list[str]] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list)
    consent: ConsentBook = field(default_factory=ConsentBook)  # see consent.py
    deletion_requests: list[DeletionRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        # Profiles by id, and profile ids by identifier: read through profile_state and
        # _profile_ids, which apply the bulk imports still queued first.
        self._states: dict[str, dict[str, Any]] = {}
        self._ids: dict[tuple[str, str], str] = {}
        # Bulk-import jobs accepted and not applied yet, in order: each request's body
        # and the indexes of its profiles that failed inside the job.
        self._queued: list[tuple[bytes, frozenset[int]]] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._event_serial = self._rng.randrange(16**9)
        self._profile_serial = self._rng.randrange(32**20)
        # Profiles by the identifier they were imported under (the view tests read as
        # ``standin.profiles``), and bulk-imported profiles not folded into it yet.
        self._by_key: dict[str, dict[str, Any]] = {}
        self._unfolded: list[Sequence[dict[str, Any]]] = []

    @property
    def profile_state(self) -> dict[str, dict[str, Any]]:
        """Profiles by profile id, every accepted import applied (under lock)."""
        if self._queued:
            self._apply_imports()
        return self._states

    @property
    def _profile_ids(self) -> dict[tuple[str, str], str]:
        if self._queued:
            self._apply_imports()
        return self._ids

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        """Profiles by the identifier they were imported under (under lock). Bulk
        imports are folded in when it is read: this view only serves tests."""
        if self._queued:
            self._apply_imports()
        for batch in self._unfolded:
            for profile in batch:
                _merge_into(self._by_key, _import_key(profile), profile)
        self._unfolded.clear()
        return self._by_key

    # -- ids -------------------------------------------------------------------------------

    def new_id(self, length: int = 6) -> str:
        """A short Klaviyo-style id (metrics, jobs), from the seeded generator. Under lock."""
        return "".join(self._rng.choices(_ALPHANUMERIC, k=length))

    def _next_event_id(self) -> str:
        # Sequential ids from a seeded start: unique, and cheap for 1,000-event bodies.
        self._event_serial += 1
        return f"{self._event_serial:011x}"

    def _new_profile_id(self) -> str:
        # ULID-shaped (26 characters of Crockford's base32: hex digits are among them),
        # sequential from a seeded start: a million-profile import drew 24 random
        # characters per profile, a quarter of the stand-in's time.
        self._profile_serial += 1
        return f"01{self._profile_serial:024X}"

    # -- metrics and profiles (callers hold the lock) --------------------------------------

    def metric(self, name: str, now: datetime) -> Metric:
        """The metric called ``name``, created on first use as Klaviyo does."""
        found = self.metrics.get(name)
        if found is None:
            found = self.metrics[name] = Metric(self.new_id(), name, now)
        return found

    def _known_profile(self, profile: dict[str, Any]) -> str | None:
        for key in _identifiers(profile):
            if key in self._profile_ids:
                return self._profile_ids[key]
        return None

    def upsert_profile(self, profile: dict[str, Any]) -> str:
        """The id of the profile these identifiers name (created if new); merges attributes."""
        return self._upsert(profile)[1]

    def _upsert(self, profile: dict[str, Any]) -> tuple[bool, str]:
        keys = _identifiers(profile)
        ids = self._profile_ids
        profile_id = next((ids[k] for k in keys if k in ids), None)
        created = profile_id is None
        if profile_id is None:
            profile_id = self._new_profile_id()
        for key in keys:
            ids.setdefault(key, profile_id)
        state = self.profile_state.get(profile_id)
        if state is None:
            state = self.profile_state[profile_id] = {"properties": {}}
        _merge(state, profile)
        state.pop("id", None)
        return created, profile_id

    # -- events ----------------------------------------------------------------------------

    def refusal_for(self, candidates: Sequence[EventCandidate],
                    refuse_known: bool) -> Refusal | None:
        """Why a bulk request must be refused, if it must (caller holds the lock)."""
        in_request: set[tuple[Any, str, str]] = set()
        profile_keys: dict[int, tuple[Any, str | None]] = {}  # events of a group share a dict
        for event in candidates:
            found = profile_keys.get(id(event.profile))
            if found is None:
                known = self._known_profile(event.profile)
                found = profile_keys[id(event.profile)] = (
                    known or tuple(_identifiers(event.profile)[:1]), known)
            profile_key, known = found
            key = event.dedupe_key()
            if (profile_key, event.metric, key) in in_request:
                what = f"The unique_id {event.unique_id!r} is repeated" if event.unique_id \
                    is not None else "Without a unique_id, the time to the second is repeated"
                return Refusal(event.pointer, f"{what} for the same profile and metric in this "
                               "request; no events were processed.")
            in_request.add((profile_key, event.metric, key))
            if refuse_known and known and (known, event.metric, key) in self._seen:
                return Refusal(event.pointer, f"An event with unique_id {event.unique_id!r} "
                               "already exists for this profile and metric; no events were "
                               "processed.")
        return None

    def record(self, candidates: Iterable[EventCandidate], now: datetime) -> int:
        """Record the events not seen before; count every arrival. Returns how many are new."""
        recorded = 0
        profile_ids: dict[int, str] = {}  # the events of a bulk group share one profile dict
        for event in candidates:
            key = event.dedupe_key()
            self.received[key] += 1
            profile_id = profile_ids.get(id(event.profile))
            if profile_id is None:
                profile_id = profile_ids[id(event.profile)] = self.upsert_profile(event.profile)
            if (profile_id, event.metric, key) in self._seen:
                continue
            self._seen.add((profile_id, event.metric, key))
            metric = self.metric(event.metric, now)
            self._store(RecordedEvent(
                event.metric, event.profile, event.unique_id, event.time, event.properties,
                event.value, event.value_currency, event.backfill, now,
                self._next_event_id(), metric.id, profile_id))
            recorded += 1
        return recorded

    def _store(self, event: RecordedEvent) -> None:
        self.events.append(event)
        self.events_by_metric.setdefault(event.metric_id, []).append(event)

    def seed_event(self, metric_name: str, profile: dict[str, Any], moment: datetime,
                   properties: dict[str, Any], now: datetime,
                   unique_id: str | None = None) -> RecordedEvent:
        """Store an event as if the account already had it (not counted as received)."""
        profile_id = self.upsert_profile(profile)
        metric = self.metric(metric_name, now)
        event = RecordedEvent(metric_name, profile, unique_id, moment, properties, None, None,
                              True, now, self._next_event_id(), metric.id, profile_id)
        self._seen.add((profile_id, metric_name, event_key(event)))
        self._store(event)
        return event

    # -- suppressions, jobs ---------------------------------------------------------------

    def suppress(self, emails: list[str], now: datetime) -> None:
        self.suppression_requests.append(list(emails))
        for email in emails:
            profile_id = self.upsert_profile({"email": email})
            self.suppressed[email] = now
            self.unsuppressed.pop(email, None)
            self.consent.suppress(profile_id, "USER_SUPPRESSED", now,
                                  method=SUPPRESSION_JOB_METHOD,
                                  method_detail=SUPPRESSION_JOB_METHOD_DETAIL)

    def unsuppress(self, emails: list[str], now: datetime) -> None:
        for email in emails:
            self.unsuppressed[email] = now
            self.suppressed.pop(email, None)
            profile_id = self._known_profile({"email": email})
            if profile_id is not None:
                self.consent.unsuppress(profile_id, now)

    def import_profile(self, profile: dict[str, Any]) -> tuple[bool, str]:
        """Create or update a profile from profile-import: (created?, profile id)."""
        created, profile_id = self._upsert(profile)
        _merge_into(self.profiles, _import_key(profile), profile)
        return created, profile_id

    def import_profiles(self, body: bytes, failed: frozenset[int] = frozenset()) -> None:
        """Accept a bulk import job: its request body, validated, and the indexes of the
        profiles that fail inside the job (under lock).

        They are applied, in order, before anything next reads or changes a profile
        (:attr:`profile_state`, :attr:`_profile_ids`): to every request and test the
        account looks as if the job had been imported at once, and a million-profile
        sync does not pay for merging its profiles while it is measured against the
        stand-in on the same machine (Klaviyo's own import runs on Klaviyo's servers).
        The body is kept as its bytes and parsed again then: a million parsed profiles
        held in waiting grew the stand-in by a gigabyte, and the kernel's work of
        handing it that memory cost more CPU than the parse.
        """
        self._queued.append((body, failed))

    def _apply_imports(self) -> None:
        """:meth:`import_profile` for each queued resource, in one loop."""
        ids = self._ids
        states = self._states
        queued, self._queued = self._queued, []
        for body, failed in queued:
            items = json.loads(body)["data"]["attributes"]["profiles"]["data"]
            if failed:
                items = [item for index, item in enumerate(items) if index not in failed]
            profiles = []
            for item in items:
                attributes = item["attributes"]
                # The document's own dict when it holds no null (ours never do): the
                # request is not kept, so nothing else sees it.
                profile = attributes if None not in attributes.values() else {
                    k: v for k, v in attributes.items() if v is not None}
                given = item.get("id")
                if given:
                    profile = {**profile, "id": given}
                get = profile.get
                email, phone, external = (get("email"), get("phone_number"),
                                          get("external_id"))
                keys = []
                if given:
                    keys.append(("id", given))
                if email:
                    keys.append(("email", email.lower()))
                if phone:
                    keys.append(("phone_number", phone))
                if external:
                    keys.append(("external_id", external))
                profile_id = next((ids[k] for k in keys if k in ids), None)
                if profile_id is None:
                    profile_id = self._new_profile_id()
                for key in keys:
                    ids.setdefault(key, profile_id)
                state = states.get(profile_id)
                if state is None:
                    state = states[profile_id] = {"properties": {}}
                kept = state["properties"]
                state.update(profile)
                state["properties"] = kept
                kept.update(get("properties") or {})
                state.pop("id", None)
                profiles.append(profile)
            self._unfolded.append(profiles)

    def add_job(self, job_type: str, total: int, now: datetime) -> Job:
        job = Job(self.new_id(12), job_type, total, now)
        self.jobs[job.id] = job
        return job

    # -- consent and erasure (see consent.py and privacy.py) -------------------------------

    def profile_id_for(self, kind: str, value: str) -> str | None:
        """The id of the profile an identifier names, if the account has it (under lock)."""
        if kind == "id":
            return value if value in self.profile_state else None
        return self._profile_ids.get((kind, value.lower() if kind == "email" else value))

    def forget_profile(self, profile_id: str) -> int:
        """Delete a profile and its events; returns how many events went (under lock)."""
        state = self.profile_state.pop(profile_id, {})
        for key in [key for key, found in self._profile_ids.items() if found == profile_id]:
            del self._profile_ids[key]
        for kind in ("email", "external_id", "phone_number", "id"):
            value = state.get(kind)
            if value:
                self.profiles.pop(str(value), None)
        email = state.get("email")
        if email:
            self.suppressed.pop(email, None)
            self.unsuppressed.pop(email, None)
        before = len(self.events)
        self.events = [e for e in self.events if e.profile_id != profile_id]
        for metric_id, events in self.events_by_metric.items():
            self.events_by_metric[metric_id] = [e for e in events if e.profile_id != profile_id]
        self._seen = {seen for seen in self._seen if seen[0] != profile_id}
        self.consent.forget(profile_id)
        return before - len(self.events)

    def opt_out(self, email: str, reason: str = "UNSUBSCRIBE", at: datetime | None = None, *,
                method: str | None = "EMAIL_UNSUBSCRIBE", method_detail: str | None = None,
                custom_method_detail: str | None = None) -> str:
        """Test helper (takes the lock): an opt-out made in Klaviyo; returns the profile id.

        ``reason`` is one of consent.SUPPRESSION_REASONS; ``at`` defaults to now.
        """
        moment = at or clock.now()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=clock.now().tzinfo)
        with self.lock:
            profile_id = self.upsert_profile({"email": email})
            self.consent.suppress(profile_id, reason, moment, method=method,
                                  method_detail=method_detail,
                                  custom_method_detail=custom_method_detail)
            return profile_id

    def add_list(self, list_id: str, name: str, double_opt_in: bool = False) -> KlaviyoList:
        """Test helper (takes the lock): create a list subscriptions may name."""
        with self.lock:
            found = self.consent.lists[list_id] = KlaviyoList(list_id, name, double_opt_in,
                                                              clock.now())
            return found


def event_key(event: RecordedEvent) -> str:
    return event.unique_id if event.unique_id is not None else f"time:{event.time.isoformat()}"
