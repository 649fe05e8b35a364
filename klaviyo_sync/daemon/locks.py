"""Who tails a log and who runs the orders pass when several daemons share one queue.

On PostgreSQL each role is a session-level advisory lock held on a dedicated connection:
the lock lives exactly as long as that session, so when its holder dies (kill -9, host
crash) the server ends the session, the lock is free, and another daemon takes it on its
next tick. The session turns on server-side TCP keepalives, so a host that vanishes
without closing its socket frees its locks within about half a minute rather than after
the kernel's two-hour default.

On SQLite there is nothing to coordinate: the file lives on one host and is served by one
daemon (running two daemons on one SQLite file is not supported), so :class:`NoLock`
is always held.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.queue.drivers import driver_for
from klaviyo_sync.state.db import session_engine

log = get_logger(__name__)

# Server-side settings of the lock session (all user-settable): notice a dead peer in
# 10 + 3 * 5 seconds, never time the idle session out.
_SESSION_SETUP = (
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
    "SET idle_session_timeout = 0",
    "SET application_name = 'klaviyo-sync lock'",
)


def lock_key(role: str, resource: str) -> int:
    """A stable signed 64-bit key for ``role`` on ``resource`` (e.g. "tail", a log path)."""
    digest = hashlib.blake2b(f"klaviyo-sync:{role}:{resource}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class RoleLock(Protocol):
    """A role held by at most one daemon: :class:`AdvisoryLock`, or :class:`NoLock`."""

    name: str

    @property
    def held(self) -> bool:
        """Whether this process held the lock at the last :meth:`ensure` (no query)."""
        ...

    def ensure(self) -> bool:
        """True if this process holds the lock now (taking it if it is free)."""
        ...

    def release(self) -> None:
        """Give the lock up (it can be taken again)."""
        ...

    def dispose(self) -> None:
        """Give the lock up for good and close its connection."""
        ...


class NoLock:
    """SQLite: a single host, a single daemon; always held."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def held(self) -> bool:
        return True

    def ensure(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def dispose(self) -> None:
        return None


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on its own connection."""

    def __init__(self, engine: Engine, name: str, key: int) -> None:
        # Its own engine without a pool: the lock's session must never be handed to other
        # work or recycled behind our back.
        self._engine = session_engine(engine)
        self.name = name
        self.key = key
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def ensure(self) -> bool:
        """Check the session that holds the lock is alive, or try to take the lock."""
        if self._conn is not None:
            try:
                self._conn.exec_driver_sql("SELECT 1")
                return True
            except sa.exc.DBAPIError as exc:
                log.warning("lock_lost", lock=self.name, error=_short(exc))
                self._drop()
        return self._try_acquire()

    def _try_acquire(self) -> bool:
        conn = None
        try:
            conn = self._engine.connect()
            _setup_session(conn)
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"),
                               {"key": self.key}).scalar()
        except sa.exc.DBAPIError as exc:
            log.warning("lock_unavailable", lock=self.name, error=_short(exc))
            if conn is not None:
                conn.close()
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        log.info("lock_acquired", lock=self.name)
        return True

    def release(self) -> None:
        """Give the lock up (closing the session releases it even if the unlock fails)."""
        if self._conn is None:
            return
        with contextlib.suppress(sa.exc.DBAPIError):
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        self._drop()
        log.info("lock_released", lock=self.name)

    def dispose(self) -> None:
        self.release()
        self._engine.dispose()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                conn.close()


def _setup_session(conn: Connection) -> None:
    for statement in _SESSION_SETUP:
        try:
            conn.exec_driver_sql(statement)
        except sa.exc.ProgrammingError:
            # An older server without the setting (idle_session_timeout is PostgreSQL 14+):
            # the lock works without it. Autocommit keeps the session usable.
            log.debug("lock_session_setting_skipped", statement=statement)


def role_lock(engine: Engine, role: str, resource: str, enabled: bool = True) -> RoleLock:
    """The lock for ``role`` on ``resource``: advisory on PostgreSQL, none on SQLite."""
    name = f"{role}:{resource}"
    if not enabled or not driver_for(engine).advisory_locks:
        return NoLock(name)
    return AdvisoryLock(engine, name, lock_key(role, resource))


def _short(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0] if str(exc) else type(exc).__name__


@contextlib.contextmanager
def exclusive(engine: Engine, role: str, resource: str) -> Iterator[None]:
    """Wait for and hold a PostgreSQL advisory lock for the ``with`` block (SQLite: no-op).

    Used around creating a brand-new state database: two daemons started together on an
    empty PostgreSQL database would otherwise both run the first migration, and one fail.
    """
    if not driver_for(engine).advisory_locks:
        yield
        return
    key = lock_key(role, resource)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        conn.commit()
        try:
            yield
        finally:
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
            except sa.exc.DBAPIError:
                # Closing the session is what releases the lock, then.
                conn.invalidate()
