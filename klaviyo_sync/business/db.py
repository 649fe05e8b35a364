"""Opening the business database, read-only, whatever its engine."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.exceptions import BusinessDataError


def open_business(url: str, **kwargs: Any) -> Engine:
    """An engine on the business database whose sessions refuse to write.

    Read-only is enforced by the database where it can be (PostgreSQL and MySQL session
    settings, SQLite's read-only open mode), not just by our good intentions.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise BusinessDataError(f"business.url: not a database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername="mysql+pymysql")
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            engine = sa.create_engine(
                f"sqlite:///file:{parsed.database}?mode=ro&uri=true", **kwargs)
        else:
            engine = sa.create_engine(parsed, **kwargs)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    engine = sa.create_engine(parsed, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _read_only(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if backend == "postgresql":
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        elif backend in ("mysql", "mariadb"):
            cur.execute("SET SESSION TRANSACTION READ ONLY")
        cur.close()
        if backend == "postgresql":
            dbapi_conn.commit()

    return engine


def open_writer(url: str) -> Engine:
    """An engine that may write the business database: only to create sample data (the
    demo); klaviyo-sync itself reads the business database through :func:`open_business`."""
    try:
        return sa.create_engine(url)
    except sa.exc.ArgumentError as exc:
        raise BusinessDataError(f"business.url: not a database URL: {exc}") from exc


def describe_error(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]
