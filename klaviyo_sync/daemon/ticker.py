"""The interval loop: runs each job every ``interval_s`` seconds of the monotonic clock.

APScheduler 3 plans its interval triggers in wall-clock time, so a backward step of the
system clock (NTP correcting a drifted host, a VM restored from a snapshot) froze every job
for the length of the step, and a forward step fired them all at once. Intervals here are
measured with :func:`time.monotonic`, which no clock step moves. Jobs marked ``inline`` run
in the loop's own thread (the watchdog: if the loop hangs, its pings stop); the others are
handed to a thread pool, and a job still running when it falls due again is skipped by the
:class:`~klaviyo_sync.daemon.jobs.Job` itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from klaviyo_sync.logconfig import get_logger

log = get_logger(__name__)


def monotonic() -> float:
    """The clock intervals and run durations are measured with (never stepped)."""
    return time.monotonic()


@dataclass
class _Entry:
    name: str
    func: Callable[[], None]
    interval_s: float
    inline: bool
    due: float  # monotonic


class IntervalLoop:
    """A thread that calls each added function every ``interval_s`` (monotonic) seconds."""

    def __init__(self, workers: int = 8, clock: Callable[[], float] = monotonic) -> None:
        self._clock = clock
        self._entries: list[_Entry] = []
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="klaviyo-sync-job")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="klaviyo-sync-loop",
                                        daemon=True)

    def add(self, name: str, func: Callable[[], None], interval_s: float, *,
            inline: bool = False, first_in_s: float = 0.0) -> None:
        """Call ``func`` ``first_in_s`` from now, then every ``interval_s``."""
        self._entries.append(_Entry(name, func, interval_s, inline,
                                    self._clock() + first_in_s))

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        """Start nothing more; runs in flight go on (their Job watches the stop event)."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = self._clock()
            for entry in self._entries:
                if now < entry.due:
                    continue
                # Coalesce: however late the loop is, a job runs once and its next time
                # is one interval from now, not a burst of missed runs.
                entry.due = now + entry.interval_s
                self._run(entry)
            wait_s = min((e.due for e in self._entries), default=now + 1.0) - self._clock()
            self._stop.wait(max(0.0, min(wait_s, 1.0)))

    def _run(self, entry: _Entry) -> None:
        if entry.inline:
            try:
                entry.func()
            except Exception:  # the loop must outlive any one job
                log.exception("loop_job_crashed", job=entry.name)
            return
        try:
            self._pool.submit(entry.func)
        except RuntimeError:  # the pool was shut down between the check and the submit
            self._stop.set()
