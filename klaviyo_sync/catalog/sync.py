"""The catalog pass: keep Klaviyo's catalog equal to the products table, sending only changes.

Per pass: read back the jobs an earlier pass left open, read the products (all of them, or
those whose updated_at moved), compare each wanted object's digest with what
``catalog_sync`` says Klaviyo holds, and send the difference as bulk jobs of at most
``batch_size`` objects: categories, then items, then variants are created and updated
(each kind's jobs read back before the next kind goes, since items name categories and
variants name items), then variants, items and categories are deleted, in that order.
Only objects this program created are ever deleted. At most ``max_jobs_in_progress`` jobs
are posted and not yet read back at any moment.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from klaviyo_sync.business.orders import raw_time_from_text, raw_time_to_text, shift_raw_time
from klaviyo_sync.business.products import Product, ProductReader, Variant, later
from klaviyo_sync.catalog.records import Wanted, delete_resource, wanted_catalog
from klaviyo_sync.catalog.store import CatalogStore, JobRecord, Outcome, SyncRow, SyncState
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import CatalogSettings, Settings
from klaviyo_sync.exceptions import RejectedSendError, SendError
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.senders.base import Sender
from klaviyo_sync.senders.catalog import (
    CatalogAction,
    CatalogApi,
    CatalogKind,
    ItemError,
    JobAnswer,
    JobStatus,
    KlaviyoCatalog,
)
from klaviyo_sync.senders.client import KlaviyoClient
from klaviyo_sync.senders.dryrun import DryRunCatalog, DryRunSender

log = get_logger(__name__)

_CREATE_ORDER = (CatalogKind.CATEGORY, CatalogKind.ITEM, CatalogKind.VARIANT)
_DELETE_ORDER = (CatalogKind.VARIANT, CatalogKind.ITEM, CatalogKind.CATEGORY)


@dataclass
class CatalogReport:
    """What one pass did; ``sent`` counts objects per "kind action" (e.g. "item update")."""

    off: str | None = None  # why the pass did nothing at all
    full: bool = False
    dry_run: bool = False
    products: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    recovered_jobs: int = 0
    unfinished_jobs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"off": self.off, "full": self.full, "dry_run": self.dry_run,
                "products": self.products, "sent": dict(self.sent),
                "requests": dict(self.requests), "failed": self.failed,
                "recovered_jobs": self.recovered_jobs, "unfinished_jobs": self.unfinished_jobs}


@dataclass
class _Plan:
    kind: CatalogKind
    creates: list[Wanted] = field(default_factory=list)
    updates: list[Wanted] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)


def plan_kind(kind: CatalogKind, wanted: dict[str, Wanted], known: dict[str, SyncRow],
              scope: set[str] | None) -> _Plan:
    """What to send for one kind; deletes only within ``scope`` (None: everything known)."""
    plan = _Plan(kind)
    busy = {e for e, row in known.items() if row.state is SyncState.IN_FLIGHT}
    for external_id, want in wanted.items():
        row = known.get(external_id)
        if external_id in busy:
            continue  # in a job Klaviyo is still processing: its read-back decides
        if row is None or not row.in_klaviyo:
            plan.creates.append(want)
        elif row.digest != want.digest:
            plan.updates.append(want)
    for external_id, row in known.items():
        if external_id in wanted or external_id in busy or not (
                row.in_klaviyo and row.created_by_us):
            continue
        if scope is None or external_id in scope:
            plan.deletes.append(external_id)
    plan.deletes.sort()
    return plan


class CatalogSync:
    """One catalog pass at a time (:meth:`run_once`); built by :func:`build_catalog_sync`."""

    def __init__(self, settings: CatalogSettings, store: CatalogStore, reader: ProductReader,
                 api: CatalogApi, sleep: Callable[[float], None] = time.sleep,
                 text_times: bool = False) -> None:
        self.settings = settings
        self.store = store
        self.reader = reader
        self.api = api
        self.sleep = sleep
        self._text_times = text_times
        self._said_off = False
        self._in_flight: deque[JobRecord] = deque()

    # --- the pass ---------------------------------------------------------------------------

    def run_once(self, full: bool = False, dry_run: bool = False,
                 stop: threading.Event | None = None) -> CatalogReport:
        """One pass: every product with ``full`` (deletions of vanished ones included),
        else those changed since the last pass. ``dry_run``: send, record nothing."""
        report = CatalogReport(full=full, dry_run=dry_run)
        self.reader.refresh()
        if not self.reader.has_products():
            report.off = f"the business database has no {self.settings.products_table} table"
            if not self._said_off:
                log.warning("catalog_pass_off", reason=report.off)
                self._said_off = True
            return report
        now = utcnow()
        if not dry_run:
            report.recovered_jobs = self._recover(report, now)
        watermark_text = None if full else self.store.watermark()
        products, variants, scope = self._read(watermark_text)
        report.full = scope is None
        report.products = len(products)
        wanted = wanted_catalog(products, variants)
        plans = {kind: plan_kind(kind, wanted[kind], self.store.known(kind),
                                 None if scope is None else scope[kind])
                 for kind in CatalogKind}
        tally: Counter[str] = Counter()
        requests: Counter[str] = Counter()
        for kind in _CREATE_ORDER:
            plan = plans[kind]
            self._send(kind, CatalogAction.CREATE,
                       [(w.external_id, w.digest, w.create) for w in plan.creates],
                       dry_run, tally, requests, report, stop)
            self._send(kind, CatalogAction.UPDATE,
                       [(w.external_id, w.digest, w.update) for w in plan.updates],
                       dry_run, tally, requests, report, stop)
            self._drain(report, 0)
        for kind in _DELETE_ORDER:
            self._send(kind, CatalogAction.DELETE,
                       [(e, None, delete_resource(kind, e)) for e in plans[kind].deletes],
                       dry_run, tally, requests, report, stop)
            self._drain(report, 0)
        report.sent, report.requests = dict(tally), dict(requests)
        report.unfinished_jobs = len(self._in_flight)
        self._in_flight.clear()
        if not dry_run and not (stop is not None and stop.is_set()):
            mark = None
            for p in products:
                mark = later(mark, p.raw_updated_at)
            self.store.set_watermark(raw_time_to_text(mark) if mark is not None
                                     else watermark_text, now)
        emit = log.info if tally or report.failed else log.debug
        emit("catalog_pass_done", full=report.full, products=report.products,
             sent=report.sent, failed=report.failed, dry_run=dry_run)
        return report

    def failed(self) -> list[SyncRow]:
        """Objects Klaviyo refused, with its detail (``klaviyo-sync catalog failed``)."""
        return self.store.failed()

    # --- reading ------------------------------------------------------------------------------

    def _read(self, watermark_text: str | None
              ) -> tuple[list[Product], list[Variant] | None, dict[CatalogKind, set[str]] | None]:
        """Products and variants to compare, and the ids a changes pass may delete."""
        has_variants = self.reader.has_variants()
        if watermark_text is None:
            products = self.reader.read_products()
            return products, self.reader.read_variants() if has_variants else None, None
        since = shift_raw_time(raw_time_from_text(watermark_text, self._text_times),
                               -self.settings.overlap_s)
        products = self.reader.read_products(since)
        if has_variants:
            # A variant edited on its own moves its updated_at, not its product's.
            seen = {p.id for p in products}
            extra = self.reader.products_of_changed_variants(since) - seen
            products += self.reader.lookup(extra).values()
        ids = [p.id for p in products]
        variants = self.reader.read_variants(ids) if has_variants else None
        scope = {CatalogKind.ITEM: set(ids), CatalogKind.CATEGORY: set(),
                 CatalogKind.VARIANT: {v.id for v in variants} if variants is not None
                 else set(ids)}
        return products, variants, scope

    # --- sending ------------------------------------------------------------------------------

    def _send(self, kind: CatalogKind, action: CatalogAction,
              objects: list[tuple[str, str | None, dict[str, Any]]], dry_run: bool,
              tally: Counter[str], requests: Counter[str], report: CatalogReport,
              stop: threading.Event | None) -> None:
        size = self.settings.batch_size
        for start in range(0, len(objects), size):
            if stop is not None and stop.is_set():
                return
            batch = objects[start:start + size]
            resources = [r for _, _, r in batch]
            key = f"{kind.value} {action.value}"
            if dry_run:
                self.api.post_job(kind, action, resources)
            else:
                self._drain(report, self.settings.max_jobs_in_progress - 1)
                self._post(kind, action, batch, resources, report)
            tally[key] += len(batch)
            requests[key] += 1

    def _post(self, kind: CatalogKind, action: CatalogAction,
              batch: list[tuple[str, str | None, dict[str, Any]]],
              resources: list[dict[str, Any]], report: CatalogReport) -> None:
        # Recorded before the POST: a kill from here on leaves a job the next pass resolves.
        job = self.store.prepare(kind, action, [(e, d) for e, d, _ in batch], utcnow())
        try:
            klaviyo_id = self.api.post_job(kind, action, resources)
        except RejectedSendError as exc:
            # Refused whole (validation is all or nothing): each object keeps the detail.
            detail = _detail_by_index(exc)
            report.failed += self.store.finish(job, [
                Outcome(e, d, detail.get(i) or str(exc)) for i, (e, d, _) in enumerate(batch)],
                JobStatus.FAILED, utcnow(), error=str(exc)[:4000])
            log.warning("catalog_job_refused", kind=kind.value, action=action.value,
                        objects=len(batch), error=str(exc)[:300])
            return
        self._in_flight.append(self.store.posted(job, klaviyo_id, utcnow()))

    def _drain(self, report: CatalogReport, keep: int) -> None:
        """Read back the oldest jobs until at most ``keep`` are in progress."""
        while len(self._in_flight) > keep:
            job = self._in_flight[0]
            answer = self._wait(job)
            if answer is None:
                return  # still processing: left posted for the next pass
            self._in_flight.popleft()
            report.failed += self._conclude(job, answer)

    def _wait(self, job: JobRecord) -> JobAnswer | None:
        assert job.klaviyo_job_id is not None
        deadline = time.monotonic() + self.settings.job_wait_s
        while True:
            answer = self.api.get_job(job.kind, job.action, job.klaviyo_job_id)
            if answer.finished:
                return answer
            if time.monotonic() >= deadline:
                log.warning("catalog_job_unfinished", job=job.klaviyo_job_id,
                            status=answer.status, waited_s=self.settings.job_wait_s)
                return None
            self.sleep(self.settings.job_poll_s)

    def _conclude(self, job: JobRecord, answer: JobAnswer) -> int:
        by_index: dict[int, str] = {}
        unplaced: list[str] = []
        for error in answer.errors:
            if error.index is not None and 0 <= error.index < len(job.items):
                by_index.setdefault(error.index, error.detail)
            else:
                unplaced.append(error.detail)
        if answer.status == "cancelled":
            unplaced.append("Klaviyo cancelled the job")
        blanket = "; ".join(unplaced) if unplaced else None
        outcomes = [Outcome(e, d, by_index.get(i) or blanket)
                    for i, (e, d) in enumerate(job.items)]
        failed = self.store.finish(job, outcomes, JobStatus.COMPLETE, utcnow(), error=blanket)
        if failed:
            log.warning("catalog_objects_refused", kind=job.kind.value,
                        action=job.action.value, refused=failed, job=job.klaviyo_job_id)
        return failed

    # --- after a crash --------------------------------------------------------------------------

    def _recover(self, report: CatalogReport, now: datetime) -> int:
        """Resolve the jobs an earlier pass left open; how many there were."""
        jobs = self.store.open_jobs()
        for job in jobs:
            if job.status is JobStatus.POSTED:
                self._in_flight.append(job)
                continue
            ids = [e for e, _ in job.items]
            if job.action is CatalogAction.UPDATE:
                landed: set[str] = set()  # cannot tell: sending the same update again is harmless
            else:
                existing = self.api.existing(job.kind, ids)
                landed = existing if job.action is CatalogAction.CREATE else set(ids) - existing
            self.store.release(job, [e for e in ids if e not in landed], now)
            self.store.finish(job, [Outcome(e, d) for e, d in job.items if e in landed],
                              JobStatus.ABANDONED, now, error="lost in a crash; resolved by "
                              "asking Klaviyo which objects exist")
        self._drain(report, 0)
        if jobs:
            log.info("catalog_jobs_recovered", jobs=len(jobs))
        return len(jobs)


def _detail_by_index(exc: RejectedSendError) -> dict[int, str]:
    found: dict[int, str] = {}
    for error in exc.errors or []:
        parsed = ItemError.from_json(error)
        if parsed.index is not None:
            found.setdefault(parsed.index, parsed.detail)
    return found


def build_catalog_sync(settings: Settings, state_engine: Engine,
                       business_engine: Engine | None, sender: Sender) -> CatalogSync | None:
    """The catalog pass on these parts, or None when the catalog is off or there is no
    business database. The wiring (app.py) calls this; it opens and builds nothing else."""
    if business_engine is None or not settings.catalog.enabled:
        return None
    api: CatalogApi
    if isinstance(sender, KlaviyoClient):
        api = KlaviyoCatalog(sender)
    elif isinstance(sender, DryRunSender):
        api = DryRunCatalog(sender)
    else:
        raise SendError(f"the catalog pass cannot send through {type(sender).__name__}")
    return CatalogSync(settings.catalog, CatalogStore(state_engine),
                       ProductReader(business_engine, settings.catalog), api,
                       text_times=business_engine.dialect.name == "sqlite")
