"""Opening the state database: engine options per backend, and its schema version.

SQLite gets WAL (readers never block the writer), a busy timeout (several processes may
share the file) and ``synchronous=NORMAL``: in WAL mode a committed transaction survives
a killed process, which is the crash the design promises to survive.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from klaviyo_sync.exceptions import (
    NotStateDatabaseError,
    SchemaOutdatedError,
    StateError,
    StateMissingError,
)
from klaviyo_sync.private_files import create_private

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration's revision: the schema this version of the code needs. Every
#: command checks the database against it; reading it from the migration scripts meant
#: importing Alembic, Mako and the scripts (a tenth of a second at every start).
#: tests/integration/test_state_db.py checks it is the scripts' head.
HEAD = "0009"
#: Where Alembic keeps a database's revision.
_VERSION_TABLE = "alembic_version"


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


_NOT_OURS = "not a klaviyo-sync state database: check state.url"


def create_engine(url: str, busy_timeout_s: float = 30.0, *, create: bool = True,
                  **kwargs: Any) -> Engine:
    """An engine for the state database; creates a SQLite file (0600) and its folder if
    need be, unless ``create`` is False (read-only commands), when a missing file is a
    :class:`StateMissingError`."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StateError(f"state.url: not a database URL: {exc}") from exc
    # JSON columns: NaN and Infinity are not JSON (PostgreSQL and Klaviyo refuse them).
    kwargs.setdefault("json_serializer", _json_text)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    path = _sqlite_path(parsed)
    if path is not None:
        if create:
            _prepare_sqlite_dir(path)
        elif not path.is_file():
            raise StateMissingError(
                f"the state database {path} does not exist (state.url): nothing has run with "
                "these settings yet, or they point at the wrong place"
            )
        engine = sa.create_engine(
            parsed, connect_args={"timeout": busy_timeout_s, "isolation_level": None}, **kwargs
        )
        _install_sqlite_pragmas(engine, busy_timeout_s)
        return _recycle_when_read_only(engine)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"isolation_level": None}, **kwargs)
        _install_sqlite_pragmas(engine, busy_timeout_s)
        return _recycle_when_read_only(engine)
    kwargs.setdefault("pool_pre_ping", True)
    return _recycle_when_read_only(sa.create_engine(parsed, **kwargs))


#: SQLSTATE read_only_sql_transaction (PostgreSQL), SQLITE_READONLY (primary code).
_PG_READ_ONLY = "25006"
_SQLITE_READONLY = 8


def _is_read_only(exc: BaseException | None) -> bool:
    if getattr(exc, "sqlstate", None) == _PG_READ_ONLY:
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == _SQLITE_READONLY


def _recycle_when_read_only(engine: Engine) -> Engine:
    """A connection opened while the database was read-only stays so for life (a
    PostgreSQL session's default_transaction_read_only, a SQLite file opened read-only
    after a chmod or a read-only mount), so once it was made writable again, pooled
    connections would keep failing until a restart. A read-only error therefore
    counts as a disconnect: the pool is emptied and the next use connects afresh."""

    @sa.event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        if _is_read_only(context.original_exception):
            context.is_disconnect = True

    return engine


def _json_text(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


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
    try:
        # SQLite gives the -wal and -shm files the database file's mode: 0600 for all.
        create_private(path)
    except OSError as exc:
        raise StateError(f"state.url: cannot create {path}: {exc.strerror}") from exc


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
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def schema_status(engine: Engine) -> SchemaStatus:
    try:
        with engine.connect() as conn:
            current = _current_revision(conn)
    except sa.exc.OperationalError as exc:
        raise StateError(f"state database unreachable: {_short(exc)}") from exc
    except sa.exc.DatabaseError as exc:  # SQLite: "file is not a database"
        raise NotStateDatabaseError(f"{_NOT_OURS} ({_short(exc)})") from exc
    return SchemaStatus(current=current, head=HEAD)


def _current_revision(conn: Connection) -> str | None:
    """The database's revision as Alembic records it (None: never migrated)."""
    if not sa.inspect(conn).has_table(_VERSION_TABLE):
        return None
    revisions = list(conn.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}"))
                     .scalars())
    if len(revisions) > 1:  # our migrations are one line: several heads are not ours
        raise NotStateDatabaseError(f"{_NOT_OURS} (it records several schema versions: "
                                    f"{', '.join(sorted(revisions))})")
    return revisions[0] if revisions else None


def upgrade(engine: Engine, revision: str = "head") -> SchemaStatus:
    """Apply migrations up to ``revision``; what ``klaviyo-sync db upgrade`` runs."""
    from alembic import command

    try:
        command.upgrade(alembic_config(engine), revision)
    except sa.exc.OperationalError as exc:
        raise StateError(f"cannot migrate the state database: {_short(exc)}") from exc
    return schema_status(engine)


def ensure_schema(engine: Engine, create: bool = True) -> None:
    """Create a brand-new database on first use (unless ``create`` is False); refuse a
    database of another schema version, or one that is not ours."""
    status = schema_status(engine)
    if status.up_to_date:
        return
    if status.current is None:
        with engine.connect() as conn:
            has_tables = bool(sa.inspect(conn).get_table_names())
        if has_tables:
            raise NotStateDatabaseError(f"{_NOT_OURS} (it has tables but no klaviyo-sync "
                                        "schema version)")
        if not create:
            raise StateMissingError("the state database is empty (state.url): nothing has "
                                    "run with these settings yet")
        upgrade(engine)
        return
    raise SchemaOutdatedError(
        f"the state database is at schema {status.current or 'none'}, this version needs "
        f"{status.head}: run `klaviyo-sync db upgrade` (back the database up first)"
    )


def open_state(url: str, busy_timeout_s: float = 30.0, *, create: bool = True,
               **kwargs: Any) -> Engine:
    """Engine + schema check: what every command that touches the state calls. With
    ``create`` False (read-only commands) nothing is created: no file, folder or schema."""
    engine = create_engine(url, busy_timeout_s, create=create, **kwargs)
    try:
        ensure_schema(engine, create=create)
    except BaseException:
        engine.dispose()
        raise
    return engine


def session_engine(engine: Engine) -> Engine:
    """An engine on ``engine``'s database without a pool, in autocommit: for a session that
    must never be handed to other work or recycled (a role lock's, daemon/locks.py)."""
    return sa.create_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def _short(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]
