"""`klaviyo-sync run`: the passes on their intervals (monotonic), signals, systemd, health.

A :class:`Daemon` lives as long as the process; each set of settings gets a
:class:`Runtime` (engine, passes, scheduler, listener). SIGHUP loads the settings file
again and, if it is valid, swaps the runtime: the passes in flight finish their batch,
then everything is rebuilt from the new settings (an invalid file is refused and the old
settings keep running). SIGTERM and SIGINT stop starting work, let the passes in flight
finish their current batch (they watch a stop event) and exit 0.

Signal handlers only set a flag: the main thread polls it, because taking a lock in a
handler (Event.set) could deadlock against the very thread it interrupted.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC
from types import FrameType
from typing import Any, Protocol

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Engine

from klaviyo_sync.app import connect_state
from klaviyo_sync.config import Settings
from klaviyo_sync.daemon.health import (
    JUDGED_PASSES,
    PassRecord,
    Status,
    compute_status,
    decide,
    save_pass_record,
)
from klaviyo_sync.daemon.http import HealthServer
from klaviyo_sync.daemon.jobs import Job, PassFunc, hung_since, stalled_for
from klaviyo_sync.daemon.locks import exclusive
from klaviyo_sync.daemon.metrics import Metrics, StatusBoard
from klaviyo_sync.daemon.passes import Pipeline
from klaviyo_sync.daemon.statelock import one_daemon
from klaviyo_sync.daemon.systemd import Notifier
from klaviyo_sync.daemon.ticker import IntervalLoop, monotonic
from klaviyo_sync.exceptions import (
    ConfigError,
    NotStateDatabaseError,
    SchemaOutdatedError,
    StateError,
)
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.state import db

log = get_logger(__name__)

#: The interval back-offs of the daily prune are measured against.
_PRUNE_BACKOFF_BASE_S = 3600.0
#: The interval jobs whose calls prove the scheduler alive (prune runs on a cron).
_WATCHED_JOBS = ("tail", "send", "retry", "orders", "status")
_POLL_S = 0.2


class Passes(Protocol):
    """What a runtime schedules (:class:`~klaviyo_sync.daemon.passes.Pipeline`, or a fake)."""

    @property
    def has_orders(self) -> bool: ...

    @property
    def has_consent(self) -> bool: ...

    @property
    def has_catalog(self) -> bool: ...
    @property
    def has_profiles(self) -> bool: ...

    def tail(self, stop: threading.Event) -> Any: ...
    def send(self, stop: threading.Event) -> Any: ...
    def retry(self, stop: threading.Event) -> Any: ...
    def orders(self, stop: threading.Event) -> Any: ...
    def consent(self, stop: threading.Event) -> Any: ...
    def optouts(self, stop: threading.Event) -> Any: ...
    def catalog(self, stop: threading.Event) -> Any: ...
    def catalog_all(self, stop: threading.Event) -> Any: ...
    def profiles(self, stop: threading.Event) -> Any: ...
    def prune(self, stop: threading.Event) -> Any: ...
    def new_requests(self) -> list[tuple[str, int | None, float]]: ...
    def close(self) -> None: ...


PassesFactory = Callable[[Settings, Engine, str], Passes]


def default_worker_id() -> str:
    """host:pid, as the runner's leases and audit rows name this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Runtime:
    """Everything built from one set of settings; started once, stopped once."""

    def __init__(self, settings: Settings, engine: Engine, passes: Passes, notifier: Notifier,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.passes = passes
        self.notifier = notifier
        self.metrics = metrics
        self.stop_event = threading.Event()
        self.board = StatusBoard(self._compute_status,
                                 max_age_s=settings.daemon.status_interval_s)
        self.jobs: list[Job] = []
        # Intervals run off the monotonic clock (daemon/ticker.py); APScheduler keeps only
        # the daily prune, a time of day, which is a wall-clock notion.
        self.loop = IntervalLoop(workers=8)
        self.scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})
        self.http: HealthServer | None = None
        if settings.daemon.http_listen:
            self.http = HealthServer(settings.daemon.http_listen, metrics)

    def start(self) -> None:
        _quiet_apscheduler()
        sched = self.settings.schedule
        p = self.passes
        every: dict[str, tuple[PassFunc, float]] = {
            "tail": (p.tail, sched.tail_s), "send": (p.send, sched.send_s),
            "retry": (p.retry, sched.retry_s)}
        if p.has_orders:
            every["orders"] = (p.orders, sched.orders_s)
        if p.has_consent:
            every["consent"] = (p.consent, sched.consent_s)
            every["optouts"] = (p.optouts, sched.optouts_s)
        if p.has_catalog:
            every["catalog"] = (p.catalog, sched.catalog_changes_s)
        if p.has_profiles:
            every["profiles"] = (p.profiles, sched.profiles_s)
        for name, (run, interval_s) in every.items():
            self.loop.add(name, self._job(name, run, interval_s), interval_s)
        prune = self._job("prune", self.passes.prune, _PRUNE_BACKOFF_BASE_S)
        self.scheduler.add_job(prune, CronTrigger.from_crontab(sched.prune_cron, timezone=UTC),
                               id="prune", name="prune", misfire_grace_time=3600)
        if self.passes.has_catalog:
            # The full pass, daily by default; the changes pass above runs in between.
            full = self._job("catalog_all", self.passes.catalog_all, _PRUNE_BACKOFF_BASE_S)
            self.scheduler.add_job(full, CronTrigger.from_crontab(sched.catalog_cron,
                                                                  timezone=UTC),
                                   id="catalog_all", name="catalog_all",
                                   misfire_grace_time=3600)
        status_s = self.settings.daemon.status_interval_s
        status = self._job("status", self._publish_status, status_s, report=False)
        self.loop.add("status", status, status_s, first_in_s=status_s)
        if self.notifier.watchdog_s:
            # The watchdog runs IN the loop's own thread: if that loop hangs, the pings
            # stop and systemd restarts us; a thread of its own would keep pinging a
            # daemon that no longer does anything.
            self.loop.add("watchdog", self._watchdog, self.notifier.watchdog_s, inline=True)
        self.metrics.board = self.board
        if self.http is not None:
            self.http.start()
        self.scheduler.start()
        self.loop.start()
        log.info("daemon_started", jobs=sorted(j.name for j in self.jobs),
                 tail_s=sched.tail_s, send_s=sched.send_s, orders=self.passes.has_orders)

    def stop(self, grace_s: float) -> bool:
        """Stop starting passes, give those in flight ``grace_s`` to finish; True if they did."""
        self.stop_event.set()
        self.loop.shutdown()
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + grace_s
        busy = [j.name for j in self.jobs if not j.wait_idle(max(0.0, deadline - time.monotonic()))]
        if self.http is not None:
            self.http.stop()
        if busy:
            # Leaving them be is safe: their leases run out and the events fall due again;
            # Klaviyo drops a resend by unique_id. Closing their connections under them is not.
            log.warning("shutdown_grace_expired", jobs=busy, grace_s=grace_s)
            return False
        self.passes.close()
        self.engine.dispose()
        return True

    def publish_status(self) -> str:
        """Refresh the status; its one-line summary (also what STATUS= shows)."""
        return self.board.refresh().summary()

    def _publish_status(self, _stop: threading.Event) -> None:
        self.notifier.status(self.publish_status())

    def _job(self, name: str, func: PassFunc, interval_s: float, report: bool = True) -> Job:
        job = Job(name, func, interval_s, self.stop_event,
                  backoff_max_s=self.settings.daemon.job_backoff_max_s,
                  on_result=self._on_result if report else None)
        self.jobs.append(job)
        return job

    def _compute_status(self) -> Status:
        status = compute_status(self.settings, self.engine)
        now = time.monotonic()
        stalled = tuple(job.name for job in self.jobs
                        if job.name in _WATCHED_JOBS and stalled_for(job, now) is not None)
        return decide(replace(status, stalled_jobs=stalled), self.settings.status) \
            if stalled else status

    def _on_result(self, name: str, result: Any, duration_s: float) -> None:
        self._record_pass(name, result)
        self.metrics.observe_job(name, result, duration_s)
        if name in ("send", "retry"):
            self.metrics.observe_requests(self.passes.new_requests())

    def _record_pass(self, name: str, result: Any) -> None:
        """Keep the outcome where `status` reads it. A pass that did nothing (a standby
        that does not hold the role) records nothing: it must not mask the holder's."""
        if name not in JUDGED_PASSES or result is None:
            return
        job = next(j for j in self.jobs if j.name == name)
        r = job.record
        try:
            save_pass_record(self.engine, name, PassRecord(
                failures=r.failures, last_ok_at=r.last_ok_at, last_failed_at=r.last_failed_at,
                last_error=(r.last_error or "")[:500] or None))
        except Exception as exc:  # the state database is down: the pass said so already
            log.debug("pass_record_not_saved", job=name, error=str(exc).splitlines()[0])

    def _watchdog(self) -> None:
        now = monotonic()
        for job in self.jobs:
            lasted = hung_since(job.record, now, self.settings.daemon.hung_job_s)
            if lasted is not None:
                log.error("job_hung", job=job.name, running_s=round(lasted),
                          hint="withholding the watchdog ping so that systemd restarts us")
                return
        self.notifier.watchdog()


class Daemon:
    """The process: opens the state database, runs a Runtime, handles signals."""

    def __init__(self, settings: Settings, notifier: Notifier, *,
                 load_settings: Callable[[], Settings] | None = None,
                 passes_factory: PassesFactory = Pipeline, worker_id: str | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.notifier = notifier
        self.load_settings = load_settings
        self.passes_factory = passes_factory
        self.worker_id = worker_id or default_worker_id()
        self.metrics = metrics or Metrics(settings.daemon.hung_job_s)
        self.runtime: Runtime | None = None
        #: True when a pass did not stop within the grace: the caller must not wait for it.
        self.abandoned_threads = False
        self._stop_requested = False
        self._reload_requested = False

    def request_stop(self) -> None:
        self._stop_requested = True

    def request_reload(self) -> None:
        self._reload_requested = True

    def run(self, handle_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`); the process exit code."""
        previous = self._install_signals() if handle_signals else {}
        try:
            with one_daemon(self.settings.state.url):
                return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.notifier.close()

    def _run(self) -> int:
        runtime = self._start(self.settings)
        if runtime is None:
            return 0
        while not self._stop_requested:
            time.sleep(_POLL_S)
            if self._reload_requested and not self._stop_requested:
                self._reload_requested = False
                swapped = self._reload(runtime)
                if swapped is None:
                    return 1
                runtime = swapped
        log.info("daemon_stopping", grace_s=self.settings.daemon.shutdown_grace_s)
        self.notifier.stopping("stopping: finishing the passes in flight")
        finished = runtime.stop(self.settings.daemon.shutdown_grace_s)
        self.abandoned_threads = not finished
        log.info("daemon_stopped", clean=finished)
        return 0

    def _start(self, settings: Settings) -> Runtime | None:
        engine = self._open_state(settings)
        if engine is None:
            return None
        passes: Passes | None = None
        try:
            passes = self.passes_factory(settings, engine, self.worker_id)
            runtime = Runtime(settings, engine, passes, self.notifier, self.metrics)
        except BaseException:
            if passes is not None:
                passes.close()
            engine.dispose()
            raise
        runtime.start()
        self.runtime = runtime
        try:
            summary = runtime.publish_status()
        except Exception as exc:  # READY must not wait on a status query
            log.warning("status_failed", error=str(exc))
            summary = "running"
        self.notifier.ready(summary)
        return runtime

    def _open_state(self, settings: Settings) -> Engine | None:
        """Wait until the state database answers and is migrated; None if told to stop."""
        engine = connect_state(settings)
        delay_s = 1.0
        while True:
            try:
                with exclusive(engine, "migrate", "state"):
                    db.ensure_schema(engine)
                return engine
            except (SchemaOutdatedError, NotStateDatabaseError):
                engine.dispose()  # waiting would not change it: say so and stop
                raise
            except (StateError, sa.exc.OperationalError) as exc:
                log.warning("state_database_waiting", error=str(exc).splitlines()[0],
                            retry_in_s=delay_s)
                self.notifier.status(f"waiting for the state database: {exc}")
            if self._sleep(delay_s):
                engine.dispose()
                return None
            delay_s = min(delay_s * 2, 30.0)

    def _reload(self, runtime: Runtime) -> Runtime | None:
        if self.load_settings is None:
            log.warning("reload_unsupported", hint="restart the service to apply new settings")
            return runtime
        try:
            settings = self.load_settings()
        except ConfigError as exc:
            log.error("reload_refused", error=str(exc), hint="still running the old settings")
            self.notifier.status(f"reload refused: {exc}")
            return runtime
        log.info("reloading", source=settings.source)
        self.notifier.reloading()
        if not runtime.stop(self.settings.daemon.shutdown_grace_s):
            # A pass that will not stop still uses the old runner and locks; starting new
            # ones beside it is not safe. Exit non-zero and let systemd restart us.
            log.error("reload_failed", reason="a pass did not stop in time; exiting")
            self.abandoned_threads = True
            return None
        self.settings = settings
        return self._start(settings)

    def _sleep(self, seconds: float) -> bool:
        """Sleep in short steps; True as soon as a stop is requested."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stop_requested:
                return True
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        return self._stop_requested

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self._stop_requested = True

        def on_reload(_signum: int, _frame: FrameType | None) -> None:
            self._reload_requested = True

        handlers = {signal.SIGTERM: on_stop, signal.SIGINT: on_stop, signal.SIGHUP: on_reload}
        return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}


def _quiet_apscheduler() -> None:
    # Our Job wrappers log every failure with context and skip runs while one is in
    # flight; APScheduler's own "skipped: maximum number of running instances" warnings
    # would repeat that every tick of a long pass.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
