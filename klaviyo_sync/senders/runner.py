"""The runner: claim due events, attach current customer data, send, acknowledge.

``drain`` works until nothing is due: ``sender.concurrency`` threads each claim a batch
(a lease, so another runner never sends the same rows at the same time), look its
customers up in one query, send it and record every event's outcome. Outcomes map to the
queue: sent -> ack; 5xx/timeout -> fail (backoff, dead after max_attempts); rejected ->
dead letter with Klaviyo's detail; 429 or refused credentials -> release without spending
an attempt. Refused credentials also stop the pass: every request would be refused, and
sending on would only burn through the queue's patience and Klaviyo's.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.business.customers import Customer, CustomerDirectory
from klaviyo_sync.clock import iso_utc, utcnow
from klaviyo_sync.config import Settings, parse_duration_s
from klaviyo_sync.exceptions import BusinessDataError, KlaviyoSyncError
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.privacy.tombstones import NO_TOMBSTONES, count_skipped, lift, tombstone_source
from klaviyo_sync.queue import EventState, QueuedEvent, QueueStore, RetryPolicy
from klaviyo_sync.queue.runners import Heartbeat, RunnerRegistry
from klaviyo_sync.senders.audit import prune_audit
from klaviyo_sync.senders.base import AuthFailure, DeliveryReport, Sender
from klaviyo_sync.senders.delivery import deliver_profiles
from klaviyo_sync.senders.enrich import NO_IDENTIFIER, has_identifier, outgoing
from klaviyo_sync.senders.hooks import SuppressionHook
from klaviyo_sync.state import meta

log = get_logger(__name__)

#: SendReport fields that are not part of its JSON summary.
_NOT_JSON = frozenset({"_lock", "auth_failure", "failure"})

#: Seconds between writes of the last-send marker and of buffered audit rows.
MARK_EVERY_S = 1.0


@dataclass
class SendReport:
    """What one drain did (summed over its batches)."""

    batches: int = 0
    claimed: int = 0
    sent: int = 0
    already_recorded: int = 0
    dead: int = 0
    retried: int = 0
    released: int = 0
    requests: int = 0
    suppressed: int = 0
    erased: int = 0  # events of forgotten people, dropped unsent
    auth_error: str | None = None
    error: str | None = None
    elapsed_s: float = 0.0
    #: Why the drain stopped early, typed: what :meth:`stopped_by` raises.
    auth_failure: AuthFailure | None = field(default=None, repr=False)
    failure: KlaviyoSyncError | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in _NOT_JSON}
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data

    def stopped_by(self) -> KlaviyoSyncError | None:
        """The error that stopped this drain, the same type on every path (the CLI's
        ``send`` and the daemon's send pass raise it): refused credentials -> AuthError,
        business database -> BusinessDataError, anything else of ours as it was raised."""
        if self.auth_failure is not None:
            return self.auth_failure.to_error()
        return self.failure

    def _stop(self, exc: KlaviyoSyncError) -> None:
        # Called under _lock: the first failure is the one reported.
        if self.failure is None:
            self.failure, self.error = exc, str(exc)

    def _refused(self, failure: AuthFailure) -> None:
        if self.auth_failure is None:
            self.auth_failure, self.auth_error = failure, failure.detail

    def summary(self) -> str:
        text = (f"sent {self.sent + self.already_recorded} event(s) in {self.requests} "
                f"request(s), {self.dead} dead, {self.retried} to retry, {self.released} "
                f"released, in {self.elapsed_s:.1f} s")
        if self.auth_error:
            text += f"; stopped: Klaviyo refused the credentials ({self.auth_error})"
        elif self.error:
            text += f"; stopped: {self.error}"
        return text


class Runner:
    """Drains the queue to a Sender. :class:`klaviyo_sync.app.App` builds it."""

    def __init__(self, settings: Settings, engine: Engine, store: QueueStore, sender: Sender,
                 customers: CustomerDirectory | None, suppression: SuppressionHook | None,
                 worker_id: str) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.sender = sender
        self.customers = customers
        self.suppression = suppression
        self.worker_id = worker_id
        s = settings.sender
        self.policy = RetryPolicy(s.max_attempts, s.backoff_base_s, s.backoff_max_s)
        self.lease = timedelta(seconds=s.lease_s)
        self.registry = RunnerRegistry(engine, s.runner_dead_after_s)
        self._heartbeat = Heartbeat(self.registry, worker_id, s.heartbeat_s)
        self._tombstone_source = tombstone_source(engine, settings.privacy.key_file)
        self._tombstones = NO_TOMBSTONES
        self._hook_lock = threading.Lock()
        self._mark_lock = threading.Lock()
        self._marked_at = self._audited_at = float("-inf")
        self._sent_since_mark = False

    def drain(self, stop: threading.Event | None = None, max_batches: int | None = None
              ) -> SendReport:
        """Claim and send until nothing is due, ``stop`` is set (the batches in hand are
        finished first), ``max_batches`` were taken, or Klaviyo refuses the credentials."""
        _freeze_startup_objects()
        self._heartbeat.start()
        self.reclaim()
        self._tombstones = self._tombstone_source()
        stop = stop or threading.Event()
        halt = threading.Event()
        report = SendReport()
        budget = [max_batches]
        crashed: list[BaseException] = []
        started = time.monotonic()

        def take_turn() -> bool:
            with report._lock:
                if budget[0] is not None:
                    if budget[0] <= 0:
                        return False
                    budget[0] -= 1
                return True

        def work() -> None:
            try:
                while not (stop.is_set() or halt.is_set()) and take_turn():
                    batch = self.store.claim(self.worker_id, self.settings.sender.claim_batch,
                                             self.lease)
                    if not batch:
                        return
                    self._process(batch, report, halt)
            except KlaviyoSyncError as exc:
                with report._lock:
                    report._stop(exc)
                halt.set()
            except BaseException as exc:  # re-raised in the caller's thread below
                crashed.append(exc)
                halt.set()

        threads = [threading.Thread(target=work, name=f"send-{i}", daemon=True)
                   for i in range(self.settings.sender.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if crashed:
            raise crashed[0]
        self._flush_audit(force=True)
        if self._sent_since_mark and not report.auth_error:
            self._mark_send_ok(force=True)
        self._flush_suppressions(report)
        report.elapsed_s = time.monotonic() - started
        # An idle pass (every few seconds under the daemon) is not worth a journal line.
        emit = log.info if report.claimed or report.error or report.auth_error else log.debug
        emit("queue_drained", **{k: v for k, v in report.to_json().items()
                                 if v not in (None, 0)})
        return report

    def _process(self, batch: list[QueuedEvent], report: SendReport,
                 halt: threading.Event) -> None:
        worker = self.worker_id
        orphans = {e.id: NO_IDENTIFIER for e in batch if not has_identifier(e)}
        if orphans:
            self.store.dead_letter(orphans, worker)
        batch = [e for e in batch if e.id not in orphans]
        try:
            customers = self._lookup(batch)
        except BusinessDataError as exc:
            # Without the business database the profiles would carry stale data: keep the
            # events (no attempt spent) and stop; the next pass tries again.
            self.store.release([e.id for e in batch], worker, timedelta(seconds=30), str(exc))
            with report._lock:
                report.claimed += len(batch) + len(orphans)
                report.released += len(batch)
                report.dead += len(orphans)
                report._stop(exc)
            log.error("business_db_unavailable", error=str(exc))
            halt.set()
            return
        if self._tombstones:
            erased = self._drop_erased(batch, customers)
            if erased:
                batch = [e for e in batch if e.id not in erased]
                with report._lock:
                    report.claimed += len(erased)
                    report.erased += len(erased)
                if not batch:
                    return
        names = self.settings.klaviyo.profile_properties
        currency = self.settings.klaviyo.default_currency
        events = [outgoing(e, customers.get(str(e.customer_id)) if e.customer_id else None,
                           names, currency) for e in batch]
        if self.settings.klaviyo.generate_events:
            result = self.sender.send_events(events)
        else:
            result = deliver_profiles(self.sender, events)
        self._record(result, worker, halt)
        with report._lock:
            report.batches += 1
            report.claimed += len(batch) + len(orphans)
            report.sent += len(result.sent)
            report.already_recorded += len(result.already_recorded)
            report.dead += len(result.dead) + len(orphans)
            report.retried += len(result.retry)
            report.released += len(result.deferred)
            report.requests += result.requests
            if result.auth_failure is not None:
                report._refused(result.auth_failure)

    def _drop_erased(self, batch: list[QueuedEvent], customers: dict[str, Customer]
                     ) -> set[int]:
        """Events of people who asked to be forgotten: deleted, never sent. One that
        happened after the request, of a customer the business shows active again, is a
        new relationship: it goes, and the tombstone is lifted (privacy/tombstones.py)."""
        erased: dict[int, int] = {}  # event id -> erasure id
        lifted: set[int] = set()
        ended = set(self.settings.privacy.erase_statuses)
        for event in batch:
            stone = self._tombstones.match(event.email, event.customer_id)
            if stone is None or stone.id in lifted:
                continue
            customer = customers.get(str(event.customer_id)) if event.customer_id else None
            if customer is not None and event.occurred_at > stone.requested_at \
                    and customer.status not in ended:
                lifted.add(stone.id)
                continue
            erased[event.id] = stone.id
        if not erased and not lifted:
            return set()
        self.store.drop_claimed(list(erased), self.worker_id)
        per_request: dict[int, int] = {}
        for erasure_id in erased.values():
            per_request[erasure_id] = per_request.get(erasure_id, 0) + 1
        with self.engine.begin() as conn:
            count_skipped(conn, per_request)
            for erasure_id in lifted:
                lift(conn, erasure_id)
        if lifted:
            self._tombstones = self._tombstone_source()
        if erased:
            log.info("events_skipped_for_erasure", count=len(erased))
        return set(erased)

    def _lookup(self, batch: list[QueuedEvent]) -> dict[str, Customer]:
        if self.customers is None:
            return {}
        ids = {str(e.customer_id) for e in batch if e.customer_id}
        found = self.customers.lookup(ids) if ids else {}
        if self.suppression is not None and found:
            with self._hook_lock:
                self.suppression.observe(found.values())
        return found

    def _record(self, result: DeliveryReport, worker: str, halt: threading.Event) -> None:
        """Turn a delivery's outcome into queue state, then the health markers."""
        self.store.ack(result.sent + result.already_recorded, worker)
        if result.dead:
            self.store.dead_letter(result.dead, worker)
            log.warning("events_rejected", count=len(result.dead),
                        first_error=next(iter(result.dead.values()))[:300])
        if result.retry:
            retried, dead = self.store.fail(result.retry, worker, self.policy)
            log.warning("send_failed", retry=retried, dead=dead,
                        error=next(iter(result.retry.values()))[:300])
        if result.deferred:
            self.store.release(result.deferred, worker,
                               timedelta(seconds=result.deferred_for_s),
                               "credentials refused" if result.auth_failure else "rate limited")
        refused = result.auth_failure
        self._flush_audit(force=refused is not None)
        if refused is not None:
            _put_meta(self.engine, meta.AUTH_FAILURE, json.dumps({
                "at": iso_utc(utcnow()),
                "status": refused.status, "detail": refused.detail[:500]}, allow_nan=False))
            log.error("klaviyo_auth_refused", error=refused.detail[:300], status=refused.status,
                      action="sending stopped; events kept; fix the credentials")
            halt.set()
        elif result.sent or result.already_recorded:
            self._mark_send_ok()

    # Health markers and audit rows are written at most every MARK_EVERY_S per runner,
    # not per batch: on a busy queue they would otherwise cost two commits per batch
    # for no information. drain() writes them once more at its end.

    def _mark_send_ok(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._mark_lock:
            self._sent_since_mark = True
            if not force and now - self._marked_at < MARK_EVERY_S:
                return
            self._marked_at, self._sent_since_mark = now, False
        _put_meta(self.engine, meta.LAST_SEND_OK_AT, iso_utc(utcnow()),
                  clear=meta.AUTH_FAILURE)

    def _flush_audit(self, force: bool = False) -> None:
        audit = self.sender.audit
        if audit is None:
            return
        now = time.monotonic()
        with self._mark_lock:
            if not force and now - self._audited_at < MARK_EVERY_S:
                return
            self._audited_at = now
        audit.flush()

    def _flush_suppressions(self, report: SendReport) -> None:
        if self.suppression is None or report.auth_error:
            return
        try:
            with self._hook_lock:
                report.suppressed = self.suppression.flush(self.sender)
        except KlaviyoSyncError as exc:
            log.warning("suppression_flush_failed", error=str(exc)[:300])

    def reclaim(self) -> int:
        """Take back the leases of runners that died (see queue/runners.py); how many."""
        dead = self.registry.dead(exclude=self.worker_id)
        if not dead:
            return 0
        workers = [row.worker for row in dead]
        released = self.store.release_orphans(workers)
        self.registry.forget(workers)
        log.info("leases_reclaimed", runners=workers, events=released)
        return released

    def close(self) -> None:
        """Stop the heartbeat and leave the runners table (the wiring calls this)."""
        self._heartbeat.stop()
        try:
            # No drain runs now: whatever this worker still holds (a drain that raised)
            # is due again at once rather than after its lease.
            self.store.release_orphans([self.worker_id])
            self.registry.remove(self.worker_id)
        except Exception as exc:  # closing must not fail on a database that went away
            log.debug("runner_not_unregistered", error=str(exc).splitlines()[0])

_frozen = threading.Event()


def _freeze_startup_objects() -> None:
    # Every batch makes thousands of short-lived objects, and each full collection the
    # garbage collector runs then walks every object of the process: the modules,
    # SQLAlchemy's and requests' machinery, alive until exit. Moving those out of its
    # sight once (gc.freeze) took a fifth off the CPU per event of a long drain.
    if not _frozen.is_set():
        _frozen.set()
        gc.collect()
        gc.freeze()


def _put_meta(engine: Engine, name: str, value: str, clear: str | None = None) -> None:
    # meta.put is update-then-insert: two runners (threads or hosts) writing the same
    # name for the first time can both insert. The loser retries and finds the row.
    for attempt in (1, 2):
        try:
            with engine.begin() as conn:
                meta.put(conn, name, value)
                if clear:
                    meta.delete(conn, clear)
            return
        except sa.exc.IntegrityError:
            if attempt == 2:
                raise


def prune(settings: Settings, engine: Engine) -> dict[str, int]:
    """Delete sent events and audit rows past their retention (the daemon's prune job)."""
    sent = QueueStore(engine).purge(
        EventState.SENT, timedelta(seconds=parse_duration_s(settings.sender.sent_retention)))
    audited = prune_audit(
        engine, timedelta(seconds=parse_duration_s(settings.sender.audit_retention)))
    log.info("sent_events_pruned", events=sent, audit_rows=audited)
    return {"sent_events": sent, "audit_rows": audited}
