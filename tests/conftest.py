"""Fixtures shared by every test: databases per backend, isolated per test.

A backend whose server is not reachable skips its tests with the reason, except under CI
(``CI=true``), where a missing service is a failure: CI must never go green by skipping.
Server URLs come from the environment, with the local defaults of the development machines:
``KLAVIYO_SYNC_TEST_PG_URL`` and ``KLAVIYO_SYNC_TEST_MYSQL_URL``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import sqlalchemy as sa

pytest_plugins = ["tests.klaviyo_standin.fixtures"]

PG_URL = os.environ.get("KLAVIYO_SYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("KLAVIYO_SYNC_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests: no per-example deadline (a shared 2-core machine makes timing noise, not
# bugs); under CI a fixed derandomized search, so a CI run can be reproduced exactly.
# Local runs keep exploring new examples, and a failure they find prints its seed.
hypothesis.settings.register_profile("local", deadline=None)
hypothesis.settings.register_profile("ci", deadline=None, derandomize=True, database=None)
hypothesis.settings.load_profile("ci" if IN_CI else "local")

_reachable: dict[str, str | None] = {}


def _unreachable_reason(url: str) -> str | None:
    """None if a server answers at ``url``, else why not (cached per session)."""
    if url not in _reachable:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[url] = None
        except Exception as exc:  # any driver error means: not usable here
            _reachable[url] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        finally:
            engine.dispose()
    return _reachable[url]


def require_service(url: str, name: str) -> None:
    """Skip (locally) or fail (under CI) when the server at ``url`` is not reachable."""
    reason = _unreachable_reason(url)
    if reason is None:
        return
    where = sa.make_url(url).render_as_string(hide_password=True)
    message = f"{name} not reachable at {where}: {reason}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


def _pg_schema_url(schema: str) -> str:
    url = sa.make_url(PG_URL)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_service(PG_URL, "PostgreSQL")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def mysql_db_url() -> Iterator[str]:
    """A MariaDB/MySQL URL of a fresh database, dropped afterwards."""
    require_service(MYSQL_URL, "MariaDB")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(MYSQL_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield sa.make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE `{name}`"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty state database, on each backend the queue supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'state.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def state_engine(state_url: str) -> Iterator[sa.Engine]:
    """An opened, migrated state database on each backend."""
    from klaviyo_sync.state.db import open_state

    engine = open_state(state_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=[
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
])
def business_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty business database, on each backend the reader supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'business.db'}"
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_schema_url"))
    return str(request.getfixturevalue("mysql_db_url"))


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write to: chmod for a normal user; for root (whom
    permissions do not stop) a read-only tmpfs mount, or a skip where mounting is denied."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
