"""Job wrappers: run one pass, never let it take the daemon down, back off when it keeps failing.

The interval loop (daemon/ticker.py) calls a :class:`Job`. The job decides by itself
whether to run this time (:func:`should_run`): after ``n`` failures in a row it waits
:func:`backoff_s` seconds from the last failure, doubling up to a cap, so a database that
is down or a log that is missing costs one error line per back-off step instead of one
every two seconds. The decisions are pure functions of the time and the job's record, so
tests drive them with freezegun.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from klaviyo_sync.clock import utcnow
from klaviyo_sync.daemon.ticker import monotonic
from klaviyo_sync.exceptions import KlaviyoSyncError
from klaviyo_sync.logconfig import get_logger

log = get_logger(__name__)

#: Failures that are operational, not bugs: logged as one line, without a traceback. A
#: database that went away surfaces as SQLAlchemy's OperationalError from any pass.
_KNOWN_ERRORS: tuple[type[Exception], ...] = (
    KlaviyoSyncError, sa.exc.OperationalError, sa.exc.InterfaceError)

#: What a job runs: a pass that takes the daemon's stop event and returns its report.
PassFunc = Callable[[threading.Event], Any]


def backoff_s(interval_s: float, failures: int, max_s: float) -> float:
    """Seconds to wait after the last of ``failures`` consecutive failures.

    The first failure costs nothing extra (the job runs again at its next time); each one
    after that doubles the wait, capped at ``max_s`` but never below the interval.
    """
    if failures <= 1:
        return 0.0
    return max(interval_s, min(max_s, interval_s * 2 ** (failures - 1)))


@dataclass(frozen=True)
class JobRecord:
    """What a job remembers between runs (a new record replaces the old one each run)."""

    failures: int = 0  # consecutive failures; 0 after a success
    last_error: str | None = None
    last_failed_at: datetime | None = None
    last_ok_at: datetime | None = None
    running_since: datetime | None = None
    #: When the run in flight started, on the monotonic clock (hung-job detection must not
    #: mistake a forward step of the wall clock for a run that lasted hours).
    running_since_s: float | None = None
    runs: int = 0
    #: The last failure on the monotonic clock: the back-off is counted from it, so a
    #: step of the wall clock neither lengthens nor cuts it (None: not recorded so).
    last_failed_s: float | None = None

    def retry_at(self, interval_s: float, max_s: float) -> datetime | None:
        """When a failing job may run again, on the wall clock, as `status` shows it
        (None when it is not backing off)."""
        if self.last_failed_at is None or self.failures <= 1:
            return None
        return self.last_failed_at + timedelta(seconds=backoff_s(interval_s, self.failures, max_s))


def should_run(record: JobRecord, now: datetime, interval_s: float, max_s: float,
               now_s: float | None = None) -> bool:
    """Whether the job runs at ``now``: not while backing off after repeated failures.

    With ``now_s`` (the monotonic clock) and a failure recorded on it, the back-off is
    measured on that clock; otherwise on the wall clock."""
    if now_s is not None and record.last_failed_s is not None:
        if record.failures <= 1:
            return True
        return now_s >= record.last_failed_s + backoff_s(interval_s, record.failures, max_s)
    retry_at = record.retry_at(interval_s, max_s)
    return retry_at is None or now >= retry_at


def record_success(record: JobRecord, now: datetime) -> JobRecord:
    return replace(record, failures=0, last_error=None, last_ok_at=now, running_since=None,
                   running_since_s=None, runs=record.runs + 1, last_failed_s=None)


def record_failure(record: JobRecord, now: datetime, error: str,
                   now_s: float | None = None) -> JobRecord:
    return replace(record, failures=record.failures + 1, last_error=error, last_failed_at=now,
                   last_failed_s=now_s, running_since=None, running_since_s=None,
                   runs=record.runs + 1)


def stalled_for(job: Job, now_mono: float, min_s: float = 60.0) -> float | None:
    """Seconds since the scheduler last called ``job`` if that is far past its interval
    (five intervals, at least ``min_s``); None while it is called on time."""
    waited = now_mono - job.last_called_mono
    return waited if waited > max(5 * job.interval_s, min_s) else None


def hung_since(record: JobRecord, now_s: float, hung_after_s: float) -> float | None:
    """Seconds a run has lasted (``now_s`` on the monotonic clock) if that is more than
    ``hung_after_s`` (0 disables)."""
    if not hung_after_s or record.running_since_s is None:
        return None
    lasted = now_s - record.running_since_s
    return lasted if lasted > hung_after_s else None


class Job:
    """A pass as the interval loop runs it: one at a time, exceptions logged, backing off."""

    def __init__(self, name: str, func: PassFunc, interval_s: float, stop: threading.Event,
                 backoff_max_s: float = 300.0,
                 on_result: Callable[[str, Any, float], None] | None = None) -> None:
        self.name = name
        self.func = func
        self.interval_s = interval_s
        self.backoff_max_s = backoff_max_s
        self.stop = stop
        self.on_result = on_result
        self.record = JobRecord()
        #: time.monotonic() of the scheduler's last call, run or not (backing off): a
        #: scheduler that stops calling is frozen, whatever the wall clock says.
        self.last_called_mono = time.monotonic()
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    @property
    def running(self) -> bool:
        return not self._idle.is_set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no run is in flight; False if one still is after ``timeout_s``."""
        return self._idle.wait(timeout_s)

    def __call__(self) -> None:
        """Run the pass once if it is due; what the scheduler calls."""
        self.last_called_mono = time.monotonic()
        now = utcnow()
        with self._lock:
            if self.stop.is_set() or self.running:
                return
            if not should_run(self.record, now, self.interval_s, self.backoff_max_s,
                              monotonic()):
                return
            self.record = replace(self.record, running_since=now, running_since_s=monotonic())
            self._idle.clear()
        started = time.monotonic()
        try:
            result = self.func(self.stop)
        except Exception as exc:  # a failing pass must not stop the daemon
            self._failed(exc, time.monotonic() - started)
        else:
            with self._lock:
                self.record = record_success(self.record, utcnow())
            self._report(result, time.monotonic() - started)
        finally:
            self._idle.set()

    def _failed(self, exc: Exception, duration_s: float) -> None:
        with self._lock:
            self.record = record_failure(self.record, utcnow(), f"{type(exc).__name__}: {exc}",
                                         monotonic())
            record = self.record
        wait = backoff_s(self.interval_s, record.failures, self.backoff_max_s)
        # SQLAlchemy's messages run to several lines (statement, parameters, a URL).
        error = (str(exc).splitlines() or [type(exc).__name__])[0][:500]
        context = dict(job=self.name, failures=record.failures, error=error,
                       next_try_in_s=round(max(wait, self.interval_s), 1))
        # A known error (database down, log missing) is one readable line; anything else
        # is a bug and gets its traceback.
        if isinstance(exc, _KNOWN_ERRORS):
            log.error("job_failed", error_type=type(exc).__name__, **context)
        else:
            log.exception("job_crashed", **context)
        self._report(exc, duration_s)

    def _report(self, result: Any, duration_s: float) -> None:
        """Hand the pass's report (or the exception it raised) to the hook."""
        if self.on_result is None:
            return
        try:
            self.on_result(self.name, result, duration_s)
        except Exception:  # metrics must never fail a pass
            log.exception("job_result_hook_failed", job=self.name)
