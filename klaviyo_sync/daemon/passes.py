"""The passes the daemon schedules, on the parts the app (app.py) builds from settings.

Each method is what one job runs. The services (ingest, delivery, orders) do the work; this
module only decides whether this process may run them now: the tail and orders passes
under their role locks (one daemon per log, one per business database), the send and retry
passes one at a time in this process (they share one runner).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.app import App
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import Settings
from klaviyo_sync.daemon.locks import RoleLock
from klaviyo_sync.exceptions import SendError
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state import meta
from klaviyo_sync.state.schema import audit

log = get_logger(__name__)


def _database_name(url: str) -> str:
    # The lock's name is logged: no password in it.
    return sa.make_url(url).render_as_string(hide_password=True) if url else "none"


def has_due_retries(engine: Engine, now: Any = None) -> bool:
    """Whether an event that already failed once (or whose lease ran out) is due now."""
    return QueueStore(engine).has_due_retries(now)


class Pipeline:
    """Tail, send, retry, orders, catalog and prune passes for one daemon process."""

    def __init__(self, settings: Settings, engine: Engine, worker_id: str) -> None:
        self.settings = settings
        self.engine = engine
        self.worker_id = worker_id
        # The daemon opened (and migrated) the engine and disposes it: the app uses it.
        self.app = app = App(settings, state_engine=engine, worker_id=worker_id)
        try:
            self.ingestor = app.ingestor
            self.runner = app.runner
            self.tracker = app.order_tracker
            self.consent_sync = app.consent_sync
            self.optouts_pass = app.optouts
            self.tail_lock: RoleLock = app.role_lock("tail", settings.log.path,
                                                     settings.daemon.tail_lock)
            self.orders_lock: RoleLock = app.role_lock(
                "orders", _database_name(settings.business.url))
            self.catalog_sync = app.catalog_sync
            self.catalog_lock: RoleLock = app.role_lock(
                "catalog", _database_name(settings.business.url))
            self.profile_sync = app.profile_sync()
            self.profiles_lock: RoleLock = app.role_lock(
                "profiles", _database_name(settings.business.url))
        except BaseException:
            app.close()
            raise
        self._delivery = threading.Lock()
        self._lock_state: dict[str, bool] = {}
        self._audit_after = self._last_audit_id()

    @property
    def has_orders(self) -> bool:
        return self.tracker is not None

    def tail(self, stop: threading.Event) -> Any:
        """Read what is new in the log, if this daemon is the one tailing it."""
        # A host that cannot see the log never takes the tail from one that can; the
        # holder keeps the lock through a rotation gap.
        if not self.tail_lock.held and not os.path.exists(self.settings.log.path):
            return None
        if not self._holds(self.tail_lock, "tail"):
            return None
        report = self.ingestor.run_once(stop)
        meta.put(self.engine, meta.LAST_TAIL_AT, utcnow().isoformat())
        return report

    def send(self, stop: threading.Event) -> Any:
        """Deliver what is due (another delivery pass in flight in this process: skip)."""
        if not self._delivery.acquire(blocking=False):
            return None
        try:
            report = self.runner.drain(stop=stop)
        finally:
            self._delivery.release()
        # The runner stops at refused credentials or a database error and says so in its
        # report; raising makes the job back off instead of knocking every 10 s. The same
        # error `klaviyo-sync send` raises for the same report.
        stopped = report.stopped_by()
        if stopped is not None:
            raise stopped
        return report

    def retry(self, stop: threading.Event) -> Any:
        """Deliver due retries between send passes (a cheap indexed check first)."""
        if not has_due_retries(self.engine):
            return None
        return self.send(stop)

    def orders(self, stop: threading.Event) -> Any:
        """Turn new and changed orders into events, if this daemon runs the orders pass."""
        if self.tracker is None or not self._holds(self.orders_lock, "orders"):
            return None
        return self.tracker.run_once(stop=stop)

    @property
    def has_consent(self) -> bool:
        return self.consent_sync is not None

    def consent(self, stop: threading.Event) -> Any:
        """Subscribe new opt-ins, if this daemon runs the business passes."""
        if self.consent_sync is None or not self._holds(self.orders_lock, "orders"):
            return None
        report = self.consent_sync.run_once(stop=stop)
        if report.error:
            raise SendError(f"consent pass stopped: {report.error}")
        return report

    def optouts(self, stop: threading.Event) -> Any:
        """Read Klaviyo's opt-outs back, if this daemon runs the business passes."""
        if self.optouts_pass is None or not self._holds(self.orders_lock, "orders"):
            return None
        return self.optouts_pass.run_once(stop=stop)

    @property
    def has_catalog(self) -> bool:
        return self.catalog_sync is not None

    def catalog(self, stop: threading.Event) -> Any:
        """Sync the products whose updated_at moved to Klaviyo's catalog (one daemon at a
        time: the catalog role lock)."""
        if self.catalog_sync is None or not self._holds(self.catalog_lock, "catalog"):
            return None
        return self.catalog_sync.run_once(full=False, stop=stop)

    def catalog_all(self, stop: threading.Event) -> Any:
        """The daily full catalog pass: every product, deletions of vanished ones included."""
        if self.catalog_sync is None or not self._holds(self.catalog_lock, "catalog"):
            return None
        return self.catalog_sync.run_once(full=True, stop=stop)

    @property
    def has_profiles(self) -> bool:
        return self.profile_sync is not None

    def profiles(self, stop: threading.Event) -> Any:
        """Send changed customers as profiles, if this daemon runs the profiles pass."""
        if self.profile_sync is None or not self._holds(self.profiles_lock, "profiles"):
            return None
        return self.profile_sync.run_once(stop)

    def prune(self, stop: threading.Event) -> Any:
        """Delete sent events and audit rows past their retention."""
        from klaviyo_sync.senders.runner import prune

        return prune(self.settings, self.engine)

    def new_requests(self) -> list[tuple[str, int | None, float]]:
        """(endpoint, status code, duration ms) of requests this process made since the
        last call."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(audit.c.id, audit.c.endpoint, audit.c.status_code,
                          audit.c.duration_ms)
                .where(audit.c.id > self._audit_after, audit.c.worker == self.worker_id)
                .order_by(audit.c.id)
            ).fetchall()
        if rows:
            self._audit_after = rows[-1][0]
        return [(endpoint, code, float(ms)) for _, endpoint, code, ms in rows]

    def close(self) -> None:
        """Release the locks and the runner's connections (no pass may be in flight)."""
        self.app.close()

    def _holds(self, lock: RoleLock, role: str) -> bool:
        held = lock.ensure()
        if self._lock_state.get(role) != held:
            # Log the changes only: a standby daemon checks every tick.
            if not held:
                log.info("role_held_elsewhere", role=role, lock=lock.name)
            self._lock_state[role] = held
        return held

    def _last_audit_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(audit.c.id))).scalar() or 0)
