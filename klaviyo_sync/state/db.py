"""Opening the state database: engine options per backend, and its schema version.

SQLite gets WAL (readers never block the writer), a busy timeout (several processes may
share the file) and ``synchronous=NORMAL``: in WAL mode a committed transaction survives
a killed process, which is the crash the design promises to survive.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from klaviyo_sync.exceptions import SchemaOutdatedError, StateError

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _sqlite_path(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def create_engine(url: str, busy_timeout_s: float = 30.0, **kwargs: Any) -> Engine:
    """An engine for the state database; creates a SQLite file's folder if need be."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StateError(f"state.url: not a database URL: {exc}") from exc
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    path = _sqlite_path(parsed)
    if path is not None:
        _prepare_sqlite_dir(path)
        engine = sa.create_engine(
            parsed, connect_args={"timeout": busy_timeout_s, "isolation_level": None}, **kwargs
        )
        _install_sqlite_pragmas(engine, busy_timeout_s)
        return engine
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"isolation_level": None}, **kwargs)
        _install_sqlite_pragmas(engine, busy_timeout_s)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kwargs)


def _prepare_sqlite_dir(path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"state.url: cannot create the state directory {folder}: {exc.strerror}"
        ) from exc
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise StateError(f"state.url: {target} is not writable by this user")


def _install_sqlite_pragmas(engine: Engine, busy_timeout_s: float) -> None:
    # pysqlite's own transaction handling is switched off (isolation_level=None) and we
    # issue BEGIN ourselves, so that a claim can take the write lock up front
    # (BEGIN IMMEDIATE) instead of failing to upgrade a read lock halfway through.
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextlib.contextmanager
def erasing(engine: Engine) -> Iterator[Connection]:
    """A write transaction whose deletes leave no trace in the file.

    SQLite keeps deleted rows in free pages and the WAL until they are reused: with
    ``secure_delete`` the freed space is zeroed, and a checkpoint afterwards copies the
    WAL back and truncates it. PostgreSQL's dead tuples are not visible to anything but
    the storage layer (``pg_dump`` does not see them) and are reclaimed by vacuum.
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        # On the driver's connection: a statement through SQLAlchemy would begin the
        # transaction before the IMMEDIATE one below.
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("PRAGMA secure_delete = ON")
        try:
            with conn.execution_options(sqlite_begin="IMMEDIATE").begin():
                yield conn
        finally:
            driver.execute("PRAGMA secure_delete = OFF")  # the pool reuses the connection
        driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def schema_status(engine: Engine) -> SchemaStatus:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except sa.exc.OperationalError as exc:
        raise StateError(f"state database unreachable: {_short(exc)}") from exc
    return SchemaStatus(current=current, head=head)


def upgrade(engine: Engine, revision: str = "head") -> SchemaStatus:
    """Apply migrations up to ``revision``; what ``klaviyo-sync db upgrade`` runs."""
    try:
        command.upgrade(alembic_config(engine), revision)
    except sa.exc.OperationalError as exc:
        raise StateError(f"cannot migrate the state database: {_short(exc)}") from exc
    return schema_status(engine)


def ensure_schema(engine: Engine) -> None:
    """Create a brand-new database on first use; refuse to run on an outdated one."""
    status = schema_status(engine)
    if status.up_to_date:
        return
    if status.current is None:
        with engine.connect() as conn:
            has_tables = bool(sa.inspect(conn).get_table_names())
        if not has_tables:
            upgrade(engine)
            return
    raise SchemaOutdatedError(
        f"the state database is at schema {status.current or 'none'}, this version needs "
        f"{status.head}: run `klaviyo-sync db upgrade` (back the database up first)"
    )


def open_state(url: str, busy_timeout_s: float = 30.0, **kwargs: Any) -> Engine:
    """Engine + schema check: what every command that touches the state calls."""
    engine = create_engine(url, busy_timeout_s, **kwargs)
    ensure_schema(engine)
    return engine


def session_engine(engine: Engine) -> Engine:
    """An engine on ``engine``'s database without a pool, in autocommit: for a session that
    must never be handed to other work or recycled (a role lock's, daemon/locks.py)."""
    return sa.create_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def _short(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]
