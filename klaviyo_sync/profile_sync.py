"""The profiles pass: every customer's Klaviyo profile current, verified by read-back.

A pass reads customers whose ``updated_at`` moved since the watermark (minus the overlap,
as the orders pass does, for rows committed late), builds their profiles and skips each
one whose digest equals the profile Klaviyo last imported for them. The rest go in bulk
import jobs of up to 10,000 profiles / 5 MB. A 400 refuses a whole request for one
malformed profile: its pointer names the offender, who fails alone, and the rest are
posted again. Every job is read back until complete; its import errors are mapped back to
their customers through the pointer (body order is kept with the job's row). Only then
is a customer imported. A crash between a POST and its read-back resumes the read-back.

The pass's thread reads and builds; a posting thread, a read-back thread and one thread
for every state write (:class:`_Writer`) overlap the rest with it (see those classes).

It lives beside app.py rather than in business/: it drives both the business reader and
the Klaviyo jobs API, and business/ never imports senders/.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate, count
from operator import add, itemgetter
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.business.customers import SqlCustomerReader
from klaviyo_sync.business.orders import (
    parse_raw_time,
    raw_time_from_text,
    raw_time_to_text,
    shift_raw_time,
)
from klaviyo_sync.business.profile_pages import (
    Page,
    PageProcess,
    PageSpec,
    read_pages,
)
from klaviyo_sync.business.profiles import Profile, ProfileBuilder
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import Settings
from klaviyo_sync.exceptions import ConfigError, RejectedSendError, RetryableSendError
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.privacy.tombstones import NO_TOMBSTONES, Tombstones
from klaviyo_sync.senders.profiles import (
    BODY_OVERHEAD,
    ImportFailure,
    JobStatus,
    ProfileJobsApi,
    bulk_import_body,
    pointer_index,
)
from klaviyo_sync.state import meta
from klaviyo_sync.state.profiles import (
    JobState,
    Known,
    ProfileJob,
    ProfileStatus,
    ProfileStore,
)

log = get_logger(__name__)
_T = TypeVar("_T")

#: A profile's encoded resource, and its (customer id, digest) pair.
_ITEM, _PAIR = itemgetter(1), itemgetter(0, 2)
#: Klaviyo's cap on one profile in a bulk import.
MAX_PROFILE_BYTES = 100 * 1024
#: The longest wait between two read-backs of a job.
MAX_POLL_S = 30.0


@dataclass
class ProfilesReport:
    """What one pass did."""

    customers_read: int = 0
    unchanged: int = 0
    sent: int = 0
    requests: int = 0
    jobs: int = 0
    refused: int = 0  # failed alone after a 400 (or locally, for a profile over 100 KB)
    imported: int = 0
    failed: int = 0
    jobs_resumed: int = 0
    unread_jobs: int = 0
    watermark: str | None = None
    interrupted: bool = False
    dry_run: bool = False
    errors: dict[str, str] = field(default_factory=dict)  # customer id -> detail (a few)
    #: Customers not sent because they asked to be forgotten (a tombstone).
    erased_skipped: int = 0
    #: Customers forgotten by this pass: a status in [privacy] erase_statuses, or gone
    #: from the customers table (with [privacy] erase_vanished, on --all passes).
    forgotten: int = 0

    def summary(self) -> str:
        what = "would be sent" if self.dry_run else "sent"
        text = (f"{self.customers_read} customer(s) read, {self.unchanged} unchanged; "
                f"{self.sent} profile(s) {what} in {self.requests} request(s)")
        if not self.dry_run:
            text += (f"; {self.imported} imported, {self.failed} failed"
                     + (f"; {self.jobs_resumed} job(s) resumed" if self.jobs_resumed else "")
                     + (f"; {self.unread_jobs} job(s) not complete yet (read back by the "
                        "next pass)" if self.unread_jobs else ""))
        if self.failed:
            text += "\n  see `klaviyo-sync profiles failed`; `profiles retry` sends them again"
        return text


class ProfileSync:
    """One profiles pass at a time (:meth:`run_once`, :meth:`retry`)."""

    def __init__(self, settings: Settings, store: ProfileStore, reader: SqlCustomerReader,
                 api: ProfileJobsApi, text_times: bool = False, dry_run: bool = False,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 tombstones: Callable[[], Tombstones] = lambda: NO_TOMBSTONES,
                 forget: Callable[[str, str], Any] | None = None) -> None:
        self.settings = settings
        #: The live tombstones (read each pass) and how to forget someone (the erasure
        #: rules of [privacy]; None in a dry run, which forgets nobody).
        self._tombstone_source = tombstones
        self._tombstones = NO_TOMBSTONES
        self._forget = forget
        self._erase_statuses = frozenset(settings.privacy.erase_statuses)
        self.config = settings.profiles
        self.store = store
        self.reader = reader
        self.api = api
        self.dry_run = dry_run
        self.builder = ProfileBuilder(settings.klaviyo.profile_properties,
                                      self.config.extra_properties, reader.extra_columns)
        self._text_times = text_times
        self._sleep = sleep
        self._clock = clock
        # Jobs sent and not read back yet, oldest first (the posting thread appends).
        self._sent: deque[ProfileJob] = deque()
        self._lookup = True
        # During a pass, the thread every state write goes through (see _Writer).
        self._writer: _Writer | None = None

    # --- the pass ------------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None, all_customers: bool = False,
                 now: datetime | None = None) -> ProfilesReport:
        """Resume unread jobs, send the changed customers (every customer with
        ``all_customers``), read every job back."""
        report = ProfilesReport(dry_run=self.dry_run)
        self._sent = deque()
        self._tombstones = self._tombstone_source()
        seen: set[str] | None = set() if all_customers and self._forget is not None \
            and self.settings.privacy.erase_vanished else None
        if not self.dry_run:
            self._resume(report, stop)
        watermark = self._load_watermark()
        since = None
        if watermark is not None and not all_customers:
            since = shift_raw_time(watermark, -self.config.overlap_s)
        # Nothing recorded yet (the initial sync): no customer of this pass can be known,
        # so the per-page look-up of their digests is skipped.
        self._lookup = self.store.any_recorded()
        writer = _Writer()
        reader = _Reader(self, report, stop, self.config.readback_poll_s,
                         enabled=not self.dry_run)
        self._writer = writer
        try:
            with writer, reader, _Poster(self, writer, report, reader.wake) as poster:
                watermark = self._post_pages(poster, reader, since, watermark, seen, report,
                                             stop)
        finally:
            self._writer = None
        if seen is not None and not report.interrupted:
            self._forget_vanished(seen, report)
        if not self.dry_run:
            if not report.interrupted and watermark is not None:
                meta.put(self.store.engine, meta.PROFILES_WATERMARK,
                         raw_time_to_text(watermark))
            self._read_back(list(self._sent), report, stop)
            meta.put(self.store.engine, meta.LAST_PROFILES_PASS_AT, (now or utcnow()).isoformat())
        report.watermark = self._text(watermark)
        emit = log.info if report.sent or report.failed or report.jobs_resumed else log.debug
        emit("profiles_pass_done", customers=report.customers_read, sent=report.sent,
             requests=report.requests, imported=report.imported, failed=report.failed,
             unread_jobs=report.unread_jobs, dry_run=self.dry_run)
        return report

    def _post_pages(self, poster: _Poster, reader: _Reader, since: Any, watermark: Any,
                    seen: set[str] | None, report: ProfilesReport,
                    stop: threading.Event | None) -> Any:
        """Read and build every page of the pass and hand its changed profiles to
        ``poster`` in batches; the watermark the pages reached."""
        batches = _Batches(self.config.batch_max_profiles, self.config.batch_max_bytes,
                           poster.submit)
        pages = self._pages(since)
        try:
            for page in pages:
                if stop is not None and stop.is_set():
                    report.interrupted = True
                    break
                report.customers_read += len(page.ids)
                if seen is not None:
                    seen.update(page.ids)
                batches.add(self._changed(self._not_erased(page, report), report),
                            self._text(watermark))
                watermark = self._later(watermark, page.last[0])
                reader.check()  # a read-back that failed for good stops the pass here
        finally:
            pages.close()  # a page process ends with it
        batches.flush(self._text(watermark))
        return watermark

    def _pages(self, since: Any) -> Generator[Page, None, None]:
        """Customers with updated_at >= ``since`` (all: None), page by page, in keyset
        order, built: by a process of their own when the pass reads every customer (see
        profile_pages.py; ``[profiles] reader_process``), else here. Here they are read in
        the pass's own thread, between building pages: the SQLite driver lets go of the
        lock for each row it steps, and a reading thread of its own then waited behind
        the building thread for almost every row."""
        with_keys = bool(self._tombstones) or bool(self._erase_statuses
                                                    and self._forget is not None)
        here = read_pages(self.reader, self.builder, since, self.config.page_size, with_keys)
        if self._own_process(since):
            spec = PageSpec(self.settings.business, self.settings.klaviyo.profile_properties,
                            dict(self.config.extra_properties), since, self.config.page_size,
                            with_keys, self.settings.logging)
            # The first pages are read here while the process starts, and all of them if
            # it cannot (see PageProcess).
            source = PageProcess(spec, head=here)
            yield from source
            log.debug("profile_pages_process", full=since is None,
                      pages_read_here=source.head_pages)
            return
        yield from here

    def _own_process(self, since: Any) -> bool:
        """Whether this pass's pages are read in a process of their own."""
        mode = self.config.reader_process
        if mode == "never" or (mode == "full" and since is not None):
            return False
        url = sa.make_url(self.settings.business.url)
        # An in-memory database is this process's alone.
        return not (url.get_backend_name() == "sqlite"
                    and url.database in (None, "", ":memory:"))

    def retry(self, stop: threading.Event | None = None) -> ProfilesReport:
        """Send every failed customer again, as the business database shows them now."""
        report = ProfilesReport(dry_run=self.dry_run)
        self._sent = deque()
        if not self.dry_run:
            self._resume(report, stop)
        ids = [r.customer_id for r in self.store.failed()]
        rows = self.reader.read_ids(ids)
        report.customers_read = len(rows)
        missing = len(ids) - len(rows)
        if missing:
            log.warning("profiles_retry_customers_gone", customers=missing)
        self._send_all([self.builder.build(r) for r in rows], report)
        if not self.dry_run:
            self._read_back(list(self._sent), report, stop)
        return report

    def close(self) -> None:
        """Nothing of its own to release: the engines and the client belong to the caller."""

    # --- erasure ------------------------------------------------------------------------

    def _not_erased(self, page: Page, report: ProfilesReport) -> list[Profile]:
        """The page's profiles to send: not those of people who asked to be forgotten
        (sending would re-create their profile), and not those whose status asks for
        erasure (they are forgotten now)."""
        profiles = page.profiles()
        tombstones = self._tombstones
        statuses = self._erase_statuses if self._forget is not None else frozenset()
        if not tombstones and not statuses:
            return profiles
        assert page.emails is not None and page.statuses is not None
        keep = []
        for profile, email, status in zip(profiles, page.emails, page.statuses, strict=True):
            customer_id = profile.customer_id
            if tombstones.match(email or None, customer_id) is not None:
                report.erased_skipped += 1
            elif status in statuses:
                assert self._forget is not None
                self._forget("status", customer_id)
                report.forgotten += 1
            else:
                keep.append(profile)
        return keep

    def _forget_vanished(self, seen: set[str], report: ProfilesReport) -> None:
        """Customers we imported who are no longer in the customers table."""
        assert self._forget is not None
        for customer_id in self.store.imported_ids():
            if customer_id not in seen:
                self._forget("vanished", customer_id)
                report.forgotten += 1

    # --- choosing and posting ---------------------------------------------------------------

    def _changed(self, profiles: list[Profile], report: ProfilesReport) -> Sequence[Profile]:
        if not self._lookup:
            return profiles
        return self._unseen(profiles, self.store.known([p.customer_id for p in profiles]),
                            report)

    @staticmethod
    def _unseen(profiles: Sequence[Profile], known: dict[str, Known],
                report: ProfilesReport) -> list[Profile]:
        fresh = []
        for profile in profiles:
            seen = known.get(profile.customer_id)
            # Unchanged since imported, or the very profile Klaviyo refused (that one
            # waits for `profiles retry` or a change in the business database).
            if seen is not None and profile.digest in (
                    seen.digest if seen.status is ProfileStatus.IMPORTED else None,
                    seen.failed_digest):
                report.unchanged += 1
                continue
            fresh.append(profile)
        return fresh

    def _send_all(self, profiles: Sequence[Profile], report: ProfilesReport) -> None:
        batches = _Batches(self.config.batch_max_profiles, self.config.batch_max_bytes,
                           lambda batch, _watermark: self._post(batch, report, None))
        batches.add(profiles, None)
        batches.flush(None)

    def _post(self, batch: Sequence[Profile], report: ProfilesReport,
              watermark: str | None) -> None:
        """One import job for ``batch``; a 400 takes the request apart (see the module)."""
        self._send(self._write(self._open, batch, watermark), report)

    def _open(self, batch: Sequence[Profile], watermark: str | None) -> _Opened:
        """A request about to be posted: its row written (before the POST), the profiles
        over Klaviyo's size cap failed at once, its body. State writes only (the pass
        runs it on its writer thread)."""
        # map() with itemgetter loops in C: these run for every profile of the pass.
        entries = list(batch)
        if entries and max(map(len, map(_ITEM, entries))) > MAX_PROFILE_BYTES:
            entries = [p for p in batch if len(p.item) <= MAX_PROFILE_BYTES]
        body = bulk_import_body(list(map(_ITEM, entries))) if entries else b""
        if self.dry_run:
            return _Opened(None, entries, {}, body)
        now = utcnow()
        pairs = list(map(_PAIR, entries))
        row_id = self.store.open_job(pairs, now, watermark)
        failures = {p.customer_id: (p.digest, f"profile of {len(p.item)} bytes: Klaviyo "
                                    f"accepts at most {MAX_PROFILE_BYTES}")
                    for p in batch if len(p.item) > MAX_PROFILE_BYTES} \
            if len(entries) < len(batch) else {}
        if failures:
            self.store.refused(row_id, pairs, failures, now)
        return _Opened(row_id, entries, failures, body)

    def _send(self, opened: _Opened, report: ProfilesReport) -> None:
        """POST an opened request until Klaviyo takes it (or nothing of it is left)."""
        row_id, entries, body = opened.row_id, opened.entries, opened.body
        if opened.refused:
            self._count_refused(opened.refused, report)
        if row_id is None:  # a dry run: the body goes to the outbox
            if entries:
                self.api.create_job(body, len(entries))
                report.requests += 1
                report.sent += len(entries)
            return
        while entries:
            try:
                report.requests += 1
                job_id = self.api.create_job(body, len(entries))
            except RejectedSendError as exc:
                bad = self._offenders(exc, len(entries))
                if not bad and len(entries) > 1:
                    # No pointer to go by: halve the request until the offender is alone.
                    self._write(self.store.abandon, row_id)
                    half = len(entries) // 2
                    self._post(entries[:half], report, None)
                    self._post(entries[half:], report, None)
                    return
                bad = bad or {0: str(exc)}
                failures = {entries[i].customer_id: (entries[i].digest, detail)
                            for i, detail in bad.items()}
                entries = [p for i, p in enumerate(entries) if i not in bad]
                self._write(self.store.refused, row_id,
                            [(p.customer_id, p.digest) for p in entries], failures, utcnow())
                self._count_refused(failures, report)
                body = bulk_import_body([p.item for p in entries])
                continue
            # Queued behind nothing the read-back of this job could overtake: it is
            # appended to _sent only after this write is on the writer's queue.
            self._write_soon(self.store.job_sent, row_id, job_id, utcnow())
            # Only the ids: the read-back finds the customers in the job's row, so an
            # initial sync of a million customers does not hold them all until its end.
            self._sent.append(ProfileJob(row_id, job_id, JobState.SENT, (), len(entries)))
            report.jobs += 1
            report.sent += len(entries)
            log.info("profile_job_sent", job_id=job_id, profiles=len(entries))
            return
        self._write(self.store.abandon, row_id)

    def _write(self, write: Callable[..., _T], *args: Any) -> _T:
        """Run a state write: on the pass's writer thread during a pass, and wait for it."""
        writer = self._writer
        return write(*args) if writer is None else writer.run(write, *args)

    def _write_soon(self, write: Callable[..., Any], *args: Any) -> None:
        """Queue a state write without waiting (its failure is raised at the pass's end)."""
        writer = self._writer
        if writer is None:
            write(*args)
        else:
            writer.later(write, *args)

    @staticmethod
    def _offenders(exc: RejectedSendError, count: int) -> dict[int, str]:
        found: dict[int, str] = {}
        for error in exc.errors:
            index = pointer_index((error.get("source") or {}).get("pointer"))
            if index is not None and index < count:
                found.setdefault(index, f"{error.get('code') or 'invalid'}: "
                                        f"{error.get('detail') or error.get('title') or ''}")
        return found

    @staticmethod
    def _count_refused(failures: dict[str, tuple[str, str]], report: ProfilesReport) -> None:
        report.refused += len(failures)
        report.failed += len(failures)
        for cid, (_digest, detail) in failures.items():
            if len(report.errors) < 20:
                report.errors[cid] = detail
            log.warning("profile_refused", customer_id=cid, error=detail[:300])

    # --- reading back -------------------------------------------------------------------

    def _resume(self, report: ProfilesReport, stop: threading.Event | None) -> None:
        """Requests a crash left behind: re-post the unposted, read back the rest, before
        anything else (so the customers in them are not taken for unsent)."""
        for job in self.store.unfinished():
            if job.state is JobState.POSTING:
                # Klaviyo may or may not have it: post the customers again (an upsert).
                self.store.abandon(job.id)
                rows = self.reader.read_ids([cid for cid, _ in job.customers])
                self._send_all([self.builder.build(r) for r in rows], report)
            else:
                self._sent.append(job)
            report.jobs_resumed += 1
        if report.jobs_resumed:
            log.info("profile_jobs_resumed", jobs=report.jobs_resumed)
            self._read_back(list(self._sent), report, stop)
            self._sent = deque()

    def _read_if_finished(self, job: ProfileJob, report: ProfilesReport) -> bool:
        """Read ``job`` back once; record its outcome if it is finished."""
        assert job.job_id is not None
        status = self.api.get_job(job.job_id)
        if status.finished:
            self._finish(job, status, report)
        return status.finished

    def _read_back(self, jobs: Sequence[ProfileJob], report: ProfilesReport,
                   stop: threading.Event | None) -> None:
        pending = list(jobs)
        delay = self.config.readback_poll_s
        deadline = self._clock() + self.config.readback_timeout_s
        while pending:
            waiting = []
            for job in pending:
                if not self._read_if_finished(job, report):
                    waiting.append(job)
            pending = waiting
            if not pending:
                break
            if self._clock() + delay > deadline or (stop is not None and stop.is_set()):
                log.warning("profile_jobs_not_complete", jobs=len(pending),
                            hint="the next profiles pass reads them back")
                break
            self._sleep(delay)
            delay = min(delay * 2, MAX_POLL_S)
        report.unread_jobs += len(pending)

    def _finish(self, job: ProfileJob, status: JobStatus, report: ProfilesReport) -> None:
        """Record a finished job's outcome: its import errors mapped to their customers."""
        errors: dict[str, str] = {}
        if status.failed or status.status != "complete":
            if not job.customers:
                job = self.store.job(job.id)
            errors = self._errors(job, status.status)
        self._write(self.store.finish_job, job, errors, utcnow())
        report.failed += len(errors)
        report.imported += job.total - len(errors)
        for cid, detail in list(errors.items())[:20 - len(report.errors)]:
            report.errors[cid] = detail
        log.info("profile_job_read", job_id=job.job_id, imported=job.total - len(errors),
                 failed=len(errors))

    def _errors(self, job: ProfileJob, status: str) -> dict[str, str]:
        """Customer id -> Klaviyo's error, for each profile the job did not import."""
        assert job.job_id is not None
        by_external: dict[str | None, str] = {cid: cid for cid, _ in job.customers}
        found: dict[str, str] = {}
        failure: ImportFailure
        for failure in self.api.import_errors(job.job_id):
            index = pointer_index(failure.pointer)
            cid = job.customers[index][0] if index is not None and index < len(
                job.customers) else by_external.get(_external_id(failure.original_payload))
            if cid is None:
                log.warning("profile_import_error_unmatched", job_id=job.job_id,
                            pointer=failure.pointer, error=failure.describe()[:300])
                continue
            found.setdefault(cid, failure.describe())
        if status != "complete":  # cancelled: nothing in it counts as imported
            for cid, _digest in job.customers:
                found.setdefault(cid, f"job {job.job_id} was {status}")
        return found

    # --- the watermark ---------------------------------------------------------------------

    def _load_watermark(self) -> Any:
        text = meta.get(self.store.engine, meta.PROFILES_WATERMARK)
        return raw_time_from_text(text, self._text_times) if text else None

    @staticmethod
    def _text(watermark: Any) -> str | None:
        return raw_time_to_text(watermark) if watermark is not None else None

    @staticmethod
    def _later(watermark: Any, candidate: Any) -> Any:
        # The overlap re-reads older rows: the watermark never moves back.
        if watermark is None or parse_raw_time(candidate) > parse_raw_time(watermark):
            return candidate
        return watermark


class _Reader:
    """Reads back the jobs the pass has sent, oldest first, in a thread of its own while
    the pass reads, builds and posts the next ones: recording a job's 10,000 outcomes is
    database work that would otherwise hold up the next POST, and an initial sync's end
    then waits only for its last jobs. What is left when the pass has posted everything
    (or is stopped) goes to the pass's own read-back, which has the deadline.

    A round that finished no job waits ``poll_s`` seconds, doubling to
    :data:`MAX_POLL_S` while none finishes (see :meth:`_round`). A transient failure of
    a read waits and asks again; any other failure ends the thread and stops the pass
    (:meth:`check`, and on leaving the ``with`` block). The outcomes are counted in a
    report of its own, added to the pass's on leaving (two threads never count into one).
    """

    def __init__(self, sync: ProfileSync, into: ProfilesReport, stop: threading.Event | None,
                 poll_s: float, enabled: bool = True) -> None:
        self._sync = sync
        self._into = into
        self._stop = stop
        self._poll_s = poll_s
        self._enabled = enabled
        self._report = ProfilesReport()
        self._wake = threading.Event()  # a job was sent, or the end came
        self._ending = threading.Event()
        self._failure: BaseException | None = None
        self._asked: set[int] = set()  # rows of the jobs asked at least once
        self._thread = threading.Thread(target=self._run, name="profile-read", daemon=True)

    def wake(self) -> None:
        """A job was sent."""
        self._wake.set()

    def _run(self) -> None:
        sent = self._sync._sent
        delay = self._poll_s
        try:
            while not self._ending.is_set() and not (self._stop and self._stop.is_set()):
                if not sent:
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                if self._round(list(sent)):
                    delay = self._poll_s
                    continue
                self._ending.wait(delay)
                delay = min(delay * 2, MAX_POLL_S)
        except BaseException as error:  # raised in the pass's thread on leaving
            self._failure = error

    def _round(self, jobs: list[ProfileJob]) -> bool:
        """Ask ``jobs`` oldest first, up to the first one still unfinished that was
        asked before (Klaviyo works through jobs in order: those after it are asked
        only once each until it is done). Whether any job was finished."""
        sent = self._sync._sent
        finished = False
        for job in jobs:
            if self._ending.is_set():
                break
            try:
                if self._sync._read_if_finished(job, self._report):
                    sent.remove(job)  # the poster only appends
                    self._asked.discard(job.id)
                    finished = True
                    continue
            except RetryableSendError as exc:  # ask again; the pass's end does too
                log.info("profile_job_read_later", job_id=job.job_id, error=str(exc)[:200])
            if job.id in self._asked:
                break
            self._asked.add(job.id)
        return finished

    def check(self) -> None:
        """Raise the thread's failure now, if it has one (the pass stops on it)."""
        if self._failure is not None:
            raise self._failure

    def __enter__(self) -> _Reader:
        if self._enabled:
            self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._enabled:
            return
        self._ending.set()
        self._wake.set()
        self._thread.join()
        report, mine = self._into, self._report
        report.imported += mine.imported
        report.failed += mine.failed
        for cid, detail in mine.errors.items():
            if len(report.errors) < 20:
                report.errors[cid] = detail
        if self._failure is not None and exc is None:
            raise self._failure


class _Batches:
    """Cuts profiles into requests of at most ``max_profiles`` profiles and
    ``max_bytes`` of body, in order, and hands each full one to ``submit`` with the
    watermark given with the profiles that overflowed it. A page's sizes are summed
    and searched in C (``accumulate``, ``bisect``), not profile by profile: an initial
    sync adds a million."""

    def __init__(self, max_profiles: int, max_bytes: int,
                 submit: Callable[[list[Profile], str | None], None]) -> None:
        self._max_profiles = max_profiles
        self._max_bytes = max_bytes
        self._submit = submit
        self._batch: list[Profile] = []
        self._size = BODY_OVERHEAD

    def add(self, profiles: Sequence[Profile], watermark: str | None) -> None:
        start = 0
        while start < len(profiles):
            chunk = profiles[start:start + self._max_profiles - len(self._batch)]
            # The body's size after each profile of the chunk: its item and a comma.
            ends = list(map(add, accumulate(map(len, map(_ITEM, chunk))),
                            count(self._size + 1)))
            take = bisect_right(ends, self._max_bytes)
            if take == 0 and not self._batch:
                take = 1  # alone over the limit: it goes (and is refused) on its own
            if take:
                self._batch.extend(chunk[:take])
                self._size = ends[take - 1]
                start += take
            if start < len(profiles):  # the request is full
                self.flush(watermark)

    def flush(self, watermark: str | None) -> None:
        if self._batch:
            self._submit(self._batch, watermark)
            self._batch, self._size = [], BODY_OVERHEAD


class _Opened(NamedTuple):
    """A request recorded and ready to post (``row_id`` None: a dry run)."""

    row_id: int | None
    entries: list[Profile]
    refused: dict[str, tuple[str, str]]  # customer id -> (digest, why), failed at once
    body: bytes


class _Writer:
    """The one thread a pass's state writes go through, in the order they are asked for.

    Recording a request before its POST, its job id after the 202 and its outcomes after
    the read-back are writes of three threads; on SQLite each would wait for the others'
    write lock, and the POST thread would wait with them. Queued here, the next request
    is recorded while the current one is in flight, and a job's id is always written
    before its outcome (the id's write is queued before the job can be read back).
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="profile-write")
        self._later: list[Future[Any]] = []

    def submit(self, write: Callable[..., _T], *args: Any) -> Future[_T]:
        return self._pool.submit(write, *args)

    def run(self, write: Callable[..., _T], *args: Any) -> _T:
        return self._pool.submit(write, *args).result()

    def later(self, write: Callable[..., Any], *args: Any) -> None:
        self._later = [f for f in self._later if not f.done() or f.exception() is not None]
        self._later.append(self._pool.submit(write, *args))

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._pool.shutdown(wait=True)
        failure = next((f.exception() for f in self._later if f.exception() is not None),
                       None)
        if failure is not None and exc is None:
            raise failure


class _Poster:
    """Posts batches in one thread of its own while the pass reads and builds the next,
    each recorded first by the writer (which does so while the one before is in
    flight): the initial sync then waits for Klaviyo's answers only at the end. Batches
    go in order (one thread each), so each one's watermark covers only what went before
    it; at most two are in hand at a time, so memory stays bounded. ``sent`` is told
    after each."""

    IN_FLIGHT = 2

    def __init__(self, sync: ProfileSync, writer: _Writer, report: ProfilesReport,
                 sent: Callable[[], None]) -> None:
        self._sync = sync
        self._writer = writer
        self._report = report
        self._sent = sent
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="profile-post")
        self._pending: deque[Future[None]] = deque()

    def _post_one(self, opened: Future[_Opened]) -> None:
        self._sync._send(opened.result(), self._report)
        self._sent()

    def submit(self, batch: Sequence[Profile], watermark: str | None) -> None:
        while len(self._pending) >= self.IN_FLIGHT:
            self._pending.popleft().result()  # a failed post stops the pass here
        opened = self._writer.submit(self._sync._open, batch, watermark)
        self._pending.append(self._pool.submit(self._post_one, opened))

    def __enter__(self) -> _Poster:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            failure = None
            while self._pending:
                try:
                    self._pending.popleft().result()
                except Exception as error:  # keep the first; wait for the rest
                    failure = failure or error
            if failure is not None and exc is None:
                raise failure
        finally:
            self._pool.shutdown(wait=True)


def _external_id(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    attributes = payload.get("attributes", payload)
    value = attributes.get("external_id") if isinstance(attributes, dict) else None
    return str(value) if value is not None else None


def build_profile_sync(settings: Settings, state_engine: Engine, business_engine: Engine,
                       sender: Any, dry_run: bool = False,
                       tombstones: Callable[[], Tombstones] = lambda: NO_TOMBSTONES,
                       forget: Callable[[str, str], Any] | None = None) -> ProfileSync:
    """The profiles pass over these parts (the wiring opens the engines and the sender).

    ``sender`` is what ``App.sender`` built: the Klaviyo client, or the dry-run
    sender whose outbox gets the job bodies. ``dry_run`` writes bodies and records nothing.
    """
    from klaviyo_sync.senders.client import KlaviyoClient
    from klaviyo_sync.senders.dryrun import DryRunSender
    from klaviyo_sync.senders.profiles import DryRunProfileJobs, KlaviyoProfileJobs

    api: ProfileJobsApi
    if isinstance(sender, DryRunSender):
        api = DryRunProfileJobs(sender)
    elif isinstance(sender, KlaviyoClient):
        api = KlaviyoProfileJobs(sender)
    else:
        raise ConfigError(f"the profiles pass cannot send through {type(sender).__name__}")
    reader = SqlCustomerReader(business_engine, settings.business,
                               tuple(settings.profiles.extra_properties))
    try:
        ProfileBuilder(settings.klaviyo.profile_properties, settings.profiles.extra_properties,
                       reader.extra_columns)
    except ValueError as exc:
        raise ConfigError(f"[klaviyo.profile_properties] / [profiles.extra_properties]: "
                          f"{exc}") from None
    return ProfileSync(settings, ProfileStore(state_engine), reader, api,
                       text_times=business_engine.dialect.name == "sqlite", dry_run=dry_run,
                       tombstones=tombstones, forget=None if dry_run else forget)
