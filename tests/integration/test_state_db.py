"""The state database: migrations match the schema, first use creates, old schema refuses."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from klaviyo_sync.exceptions import NotStateDatabaseError, SchemaOutdatedError, StateError
from klaviyo_sync.state import db
from klaviyo_sync.state.schema import metadata


def test_migrations_create_exactly_the_declared_schema(state_engine: sa.Engine) -> None:
    with state_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert db.schema_status(state_engine).up_to_date


def test_the_head_every_command_checks_is_the_migration_scripts_head(
        state_engine: sa.Engine) -> None:
    """db.HEAD spares every command importing Alembic and the scripts: it must be theirs,
    and the revision read without Alembic must be the one Alembic reads."""
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(db.alembic_config()).get_current_head() == db.HEAD
    with state_engine.connect() as conn:
        assert db.schema_status(state_engine).current == \
            MigrationContext.configure(conn).get_current_revision() == db.HEAD


def test_a_database_recording_two_schema_versions_is_not_taken_for_ours(
        state_engine: sa.Engine) -> None:
    with state_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES ('0001')"))
    with pytest.raises(NotStateDatabaseError, match="several schema versions: 0001, 0009"):
        db.schema_status(state_engine)


def test_brand_new_sqlite_file_is_created_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "state.db"
    engine = db.open_state(f"sqlite:///{path}")
    assert path.exists()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


def test_outdated_schema_is_refused_with_the_upgrade_command(state_url: str) -> None:
    engine = db.create_engine(state_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000_old'"))
    with pytest.raises(SchemaOutdatedError, match="run `klaviyo-sync db upgrade`"):
        db.ensure_schema(engine)
    engine.dispose()


def test_unwritable_state_directory_is_a_clear_error(readonly_dir: Path) -> None:
    with pytest.raises(StateError, match=r"state.url: .* is not writable by this user"):
        db.create_engine(f"sqlite:///{readonly_dir / 'state.db'}")


def test_state_directory_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create the state directory"):
        db.create_engine(f"sqlite:///{blocker / 'sub' / 'state.db'}")


@pytest.fixture(params=[0o000, 0o022])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_a_new_sqlite_state_file_and_its_journal_are_private(tmp_path: Path,
                                                             umask: int) -> None:
    path = tmp_path / "state" / "state.db"
    engine = db.open_state(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO meta (name, value, updated_at) "
                             "VALUES ('k', 'v', '2026-01-01')"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{path}-wal").stat().st_mode) == 0o600
    engine.dispose()


def test_the_dry_run_outbox_is_created_private(tmp_path: Path, umask: int) -> None:
    from klaviyo_sync.senders.dryrun import DryRunSender

    sender = DryRunSender(tmp_path / "out" / "outbox.jsonl")
    sender.close()
    assert stat.S_IMODE((tmp_path / "out" / "outbox.jsonl").stat().st_mode) == 0o600


@pytest.mark.postgres
def test_a_database_made_read_only_then_writable_again_recovers_without_restart(
        pg_schema_url: str) -> None:
    """Sessions opened while PostgreSQL was read-only (a standby, before promotion) stay
    read-only for life: a write error must recycle them, not keep failing until restart."""
    import contextlib
    import uuid

    from klaviyo_sync.state import meta

    role = f"ro_{uuid.uuid4().hex[:10]}"
    url = sa.make_url(pg_schema_url)
    schema = url.query["options"].split("=", 1)[1]
    admin = sa.create_engine(url.set(query={}), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(sa.text(f'GRANT ALL ON SCHEMA "{schema}" TO "{role}"'))
    engine = db.open_state(pg_schema_url)  # the schema, made by its owner
    with admin.connect() as conn:
        conn.execute(sa.text(f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'))
        conn.execute(sa.text(f'ALTER ROLE "{role}" SET default_transaction_read_only = on'))
    engine.dispose()
    engine = db.create_engine(url.set(username=role).render_as_string(hide_password=False))
    try:
        for _ in range(2):
            with pytest.raises(sa.exc.DBAPIError, match="read-only"):
                meta.put(engine, "probe", "1")
        with admin.connect() as conn:  # writable again
            conn.execute(sa.text(f'ALTER ROLE "{role}" RESET default_transaction_read_only'))
        with contextlib.suppress(sa.exc.DBAPIError):  # at most this write finds out
            meta.put(engine, "probe", "2")
        meta.put(engine, "probe", "3")
        assert meta.get(engine, "probe") == "3"
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER'))
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_migration_0009_moves_unfinished_customers_apart_as_an_object_in_body_order(
        state_url: str) -> None:
    """Unfinished requests' [id, digest] pairs become {id: digest} in
    profile_job_customers with their order kept (an import error's pointer finds its
    customer by position); requests already done or abandoned keep none; a downgrade
    puts the pairs back."""
    engine = db.create_engine(state_url)
    db.upgrade(engine, "0008")
    pairs = [["9", "d9"], ["10", "d10"], ["2", "d2"], ['q"uote', "dq"]]
    insert = sa.text("INSERT INTO profile_jobs (id, status, customers, total, created_at) "
                     "VALUES (:id, :status, :customers, :total, '2026-12-01 00:00:00')")
    with engine.begin() as conn:
        conn.execute(insert, {"id": 1, "status": "sent", "customers": json.dumps(pairs),
                              "total": 4})
        conn.execute(insert, {"id": 2, "status": "posting", "customers": "[]", "total": 0})
        for row_id, ended in ((3, "done"), (4, "abandoned")):  # nothing to keep
            conn.execute(insert, {"id": row_id, "status": ended,
                                  "customers": json.dumps(pairs), "total": 4})
    db.upgrade(engine)
    # (as text: PostgreSQL's driver would parse the JSON into a dict, losing nothing
    # but hiding the order under test)
    with engine.connect() as conn:
        moved = conn.execute(sa.text(
            "SELECT job_row_id, CAST(customers AS TEXT) FROM profile_job_customers "
            "ORDER BY job_row_id")).all()
    assert [(row_id, list(json.loads(text).items())) for row_id, text in moved] == [
        (1, [tuple(pair) for pair in pairs]), (2, [])]
    command.downgrade(db.alembic_config(engine), "0008")
    with engine.connect() as conn:
        back = conn.execute(sa.text(
            "SELECT CAST(customers AS TEXT) FROM profile_jobs ORDER BY id")).scalars()
        assert [json.loads(str(text)) for text in back] == [pairs, [], [], []]
    engine.dispose()
