"""`klaviyo-sync status`: exit codes and figures from a real state database, each backend."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from klaviyo_sync.cli import cli
from klaviyo_sync.clock import utcnow
from klaviyo_sync.queue import NewEvent, QueueStore
from klaviyo_sync.state import meta
from klaviyo_sync.state.schema import checkpoints, rejects


@pytest.fixture
def setup(tmp_path: Path, state_engine: sa.Engine, state_url: str) -> tuple[Path, sa.Engine]:
    log = tmp_path / "system.log"
    log.write_bytes(b"2026-03-01 12:00:00 login customer=1\n" * 10)
    config = tmp_path / "settings.toml"
    config.write_text(f'[state]\nurl = "{state_url}"\n[log]\npath = "{log}"\n'
                      '[status]\ndegraded_backlog_age_s = 900.0\n'
                      'failing_backlog_age_s = 7200.0\n', encoding="utf-8")
    return config, state_engine


def status(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), "status", *args])
    return result.exit_code, result.output


def enqueue(engine: sa.Engine, n: int, age: timedelta) -> None:
    when = utcnow() - age
    QueueStore(engine).enqueue_many(
        [NewEvent(unique_id=f"u{age.total_seconds()}-{i}", metric="cancelled", source="log",
                  occurred_at=when, properties={}, customer_id=str(i)) for i in range(n)],
        now=when)


def test_healthy_exits_0_with_the_figures(setup: tuple[Path, sa.Engine]) -> None:
    config, engine = setup
    enqueue(engine, 3, timedelta(seconds=10))
    log_size = 370
    with engine.begin() as conn:
        conn.execute(checkpoints.insert().values(
            name=str(config.parent / "system.log"), path=str(config.parent / "system.log"),
            device=None, inode=None, fingerprint=None, fingerprint_len=0, offset=74,
            file_size=74, lines_read=2, updated_at=utcnow()))
        conn.execute(rejects.insert().values(
            file="system.log", offset=0, length=4, raw=b"bad\n", truncated=False,
            event_type="cancelled", reason="no customer", created_at=utcnow(),
            line_hash="h1"))
    meta.put(engine, meta.LAST_SEND_OK_AT, "2026-03-01T12:00:00+00:00")
    code, out = status(config, "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["health"] == "healthy" and data["reasons"] == []
    assert data["queue"] == {"pending": 3, "leased": 0, "sent": 0, "dead": 0}
    assert 5 <= data["oldest_due_age_s"] < 120
    assert data["rejects"] == 1 and data["last_send_ok_at"] == "2026-03-01T12:00:00+00:00"
    # The checkpoint has no inode recorded here: counted as another file (rotation).
    assert data["tail"]["offset"] == 74 and data["tail"]["size"] == log_size
    code, text = status(config)
    assert code == 0 and text.startswith("klaviyo-sync: healthy")
    assert "3 pending" in text and "1 (klaviyo-sync rejects list)" in text


def test_a_backlog_older_than_the_threshold_exits_1(setup: tuple[Path, sa.Engine]) -> None:
    config, engine = setup
    enqueue(engine, 2, timedelta(minutes=20))
    code, out = status(config, "--json")
    data = json.loads(out)
    assert code == 1 and data["health"] == "degraded"
    assert data["reasons"][0].startswith("oldest due event waiting 20m")
    code, text = status(config)
    assert code == 1 and "- oldest due event waiting 20m" in text


def test_refused_credentials_exit_2(setup: tuple[Path, sa.Engine]) -> None:
    config, engine = setup
    meta.put_json(engine, meta.AUTH_FAILURE,
                  {"at": "2026-03-01T11:00:00+00:00", "status": 401,
                   "detail": "Incorrect authentication credentials."})
    code, out = status(config, "--json")
    data = json.loads(out)
    assert code == 2 and data["health"] == "failing"
    assert data["auth_failure"]["status"] == 401
    assert "Klaviyo refuses our credentials" in data["reasons"][0]
    code, text = status(config)
    assert code == 2 and "REFUSED since 2026-03-01T11:00:00+00:00" in text


def test_an_unreachable_state_database_is_unknown_exit_3(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text('[state]\nurl = "postgresql://nobody@127.0.0.1:1/none"\n',
                      encoding="utf-8")
    code, out = status(config, "--json")
    assert code == 3
    data = json.loads(out)
    assert data["health"] == "unknown" and data["reasons"][0].startswith("state database:")
    assert data["decided_by"] == "state_db"


def test_bad_settings_make_status_unknown_not_the_config_error_code(tmp_path: Path) -> None:
    # Exit 2 means "failing" to a monitoring system: a typo in the settings must not
    # page someone as an outage of the pipeline. Unknown (3) says what is known: nothing.
    config = tmp_path / "settings.toml"
    config.write_text("[status]\nfailing_backlog_age_s = 'soon'\n", encoding="utf-8")
    code, out = status(config, "--json")
    data = json.loads(out)
    assert code == 3 and data["health"] == "unknown" and data["decided_by"] == "settings"
    assert "status.failing_backlog_age_s" in data["reasons"][0]


def test_a_pass_that_keeps_failing_makes_status_fail(setup: tuple[Path, sa.Engine]) -> None:
    from klaviyo_sync.daemon.health import PassRecord, save_pass_record

    config, engine = setup
    save_pass_record(engine, "tail", PassRecord(
        failures=4, last_ok_at=utcnow() - timedelta(minutes=3), last_failed_at=utcnow(),
        last_error="LogSourceError: log /var/log/x.log: is a directory"))
    code, out = status(config, "--json")
    data = json.loads(out)
    assert code == 2 and data["decided_by"] == "tail_pass"
    assert data["passes"]["tail"]["failures"] == 4
    code, text = status(config)
    assert code == 2 and "(decided by tail_pass)" in text and "FAILED 4x in a row" in text


def test_a_log_path_that_is_a_directory_fails(setup: tuple[Path, sa.Engine],
                                              tmp_path: Path) -> None:
    config, _ = setup
    folder = tmp_path / "system.log.d"
    folder.mkdir()
    config.write_text(config.read_text(encoding="utf-8").replace(
        str(tmp_path / "system.log"), str(folder)), encoding="utf-8")
    code, out = status(config, "--json")
    data = json.loads(out)
    assert code == 2 and data["decided_by"] == "log"
    assert "is a directory" in data["reasons"][0]


def test_a_business_database_that_does_not_answer_fails(setup: tuple[Path, sa.Engine]
                                                        ) -> None:
    config, _ = setup
    config.write_text(config.read_text(encoding="utf-8") +
                      '[business]\nurl = "postgresql://nobody@127.0.0.1:1/shop"\n',
                      encoding="utf-8")
    code, out = status(config, "--json")
    data = json.loads(out)
    assert code == 2 and data["decided_by"] == "business_db"
    assert data["business_error"]


def test_status_creates_no_business_file(setup: tuple[Path, sa.Engine], tmp_path: Path
                                         ) -> None:
    config, _ = setup
    shop = tmp_path / "shop.db"
    config.write_text(config.read_text(encoding="utf-8") +
                      f'[business]\nurl = "sqlite:///{shop}"\n', encoding="utf-8")
    code, out = status(config, "--json")
    assert json.loads(out)["decided_by"] == "business_db" and code == 2
    assert not shop.exists()
