"""Role locks: PostgreSQL advisory locks pass to a standby when the holder's session ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from klaviyo_sync.daemon.locks import AdvisoryLock, NoLock, lock_key, role_lock
from klaviyo_sync.state.db import create_engine


@pytest.fixture
def pg(pg_schema_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_schema_url)
    yield engine
    engine.dispose()


def test_keys_are_stable_and_distinct() -> None:
    assert lock_key("tail", "/var/log/a.log") == lock_key("tail", "/var/log/a.log")
    assert lock_key("tail", "/var/log/a.log") != lock_key("tail", "/var/log/b.log")
    assert lock_key("tail", "x") != lock_key("orders", "x")
    assert -(2**63) <= lock_key("tail", "x") < 2**63


def test_sqlite_needs_no_lock(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    lock = role_lock(engine, "tail", "/var/log/a.log")
    assert isinstance(lock, NoLock) and lock.ensure()
    engine.dispose()


def test_one_holder_at_a_time_and_release_hands_over(pg: sa.Engine) -> None:
    first = role_lock(pg, "tail", "/var/log/a.log")
    second = role_lock(pg, "tail", "/var/log/a.log")
    other_log = role_lock(pg, "tail", "/var/log/b.log")
    assert isinstance(first, AdvisoryLock) and isinstance(second, AdvisoryLock)
    try:
        assert first.ensure()
        assert first.ensure()  # still held: checked, not taken twice
        assert not second.ensure()
        assert other_log.ensure()  # another log is another lock
        first.release()
        assert second.ensure()
        assert not first.ensure()
    finally:
        for lock in (first, second, other_log):
            lock.dispose()  # type: ignore[attr-defined]


def test_a_dead_holder_frees_the_lock_for_the_standby(pg: sa.Engine) -> None:
    holder = AdvisoryLock(pg, "tail:x", lock_key("tail", "x"))
    standby = AdvisoryLock(pg, "tail:x", lock_key("tail", "x"))
    try:
        assert holder.ensure() and not standby.ensure()
        assert holder._conn is not None
        pid = holder._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        # What the server does when the holder's process dies: its session ends.
        with pg.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        assert standby.ensure()
        with capture_logs() as logs:
            assert not holder.ensure()  # notices the loss, and the standby now holds it
        assert [e["event"] for e in logs][:1] == ["lock_lost"]
    finally:
        holder.dispose()
        standby.dispose()


def test_the_lock_session_turns_on_keepalives(pg: sa.Engine) -> None:
    lock = AdvisoryLock(pg, "orders:x", lock_key("orders", "x"))
    try:
        assert lock.ensure() and lock._conn is not None
        idle = lock._conn.exec_driver_sql("SHOW tcp_keepalives_idle").scalar()
        assert idle in ("10", "10s")
    finally:
        lock.dispose()
