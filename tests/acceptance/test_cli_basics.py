"""The installed CLI as a user runs it: settings errors, config show, db upgrade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY


def run(*args: str, cwd: Path | None = None, env: dict | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "klaviyo_sync", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=60)


def test_bad_setting_is_one_line_exit_2_and_no_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.toml"
    cfg.write_text("[sender]\nmax_attempts = 'lots'\n")
    result = run("--config", str(cfg), "config", "check")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"klaviyo-sync: error: {cfg}: sender.max_attempts: expected integer, got string 'lots'"
    )
    verbose = run("-v", "--config", str(cfg), "config", "check")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_missing_settings_file_names_where_it_looked(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "nope.toml"), "config", "check")
    assert result.returncode == 2
    assert "nope.toml: settings file not found" in result.stderr


def test_config_show_masks_credentials(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f"[state]\nurl = 'sqlite:///{tmp_path}/s.db'\n"
                   "[business]\nurl = 'mysql+pymysql://shop:hunter2@db/shop'\n")
    env = {"KLAVIYO_API_KEY": "pk_live_supersecretvalue", "PATH": "/usr/bin:/bin"}
    result = run("--config", str(cfg), "config", "show", "--json", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["business"]["url"] == "mysql+pymysql://shop:***@db/shop"
    assert shown["klaviyo"]["api_key"] == "***"
    assert "hunter2" not in result.stdout and "supersecret" not in result.stdout


def test_db_upgrade_creates_then_reports_up_to_date(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f"[state]\nurl = 'sqlite:///{tmp_path}/state/s.db'\n")
    first = run("--config", str(cfg), "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert "schema none ->" in first.stdout
    status = run("--config", str(cfg), "db", "status")
    assert "up to date" in status.stdout


def test_config_show_masks_a_password_containing_a_slash(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.toml"
    cfg.write_text("[state]\nurl = 'postgresql+psycopg://sync:pa/ss@db/state'\n"
                   "[business]\nurl = 'mysql+pymysql://shop:hun/ter2@db:3306/shop'\n")
    result = run("--config", str(cfg), "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["state"]["url"] == "postgresql+psycopg://sync:***@db/state"
    assert shown["business"]["url"] == "mysql+pymysql://shop:***@db:3306/shop"
    assert "pa/ss" not in result.stdout and "ter2" not in result.stdout


def test_config_show_prints_valid_toml_that_reads_back(tmp_path: Path) -> None:
    import tomllib

    cfg = tmp_path / "settings.toml"
    cfg.write_text(f"[state]\nurl = 'sqlite:///{tmp_path}/s.db'\n"
                   "[events]\n'started.signup' = 'Started Signup \u65b0\u898f'\n")
    result = run("--config", str(cfg), "config", "show")
    assert result.returncode == 0, result.stderr
    shown = tomllib.loads(result.stdout)
    assert shown["events"]["started.signup"] == "Started Signup \u65b0\u898f"
    assert shown["business"]["columns"]["customer_id"] == "id"
    assert shown["klaviyo"]["profile_properties"]["status"] == "Status"
    assert shown["state"]["url"] == f"sqlite:///{tmp_path}/s.db"


READ_ONLY = [("status",), ("queue", "list"), ("queue", "show", "1"), ("rejects", "list"),
             ("rejects", "show", "1"), ("audit",), ("suppressions", "list"),
             ("db", "status")]


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def test_read_only_commands_create_nothing_and_say_the_state_is_missing(
        tmp_path: Path) -> None:
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f"[state]\nurl = 'sqlite:///{tmp_path}/var/state.db'\n"
                   f"[business]\nurl = 'sqlite:///{tmp_path}/shop.db'\n"
                   f"[log]\npath = '{tmp_path}/system.log'\n"
                   "[sender]\nkind = 'dry-run'\n")
    before = files_under(tmp_path)
    for command in READ_ONLY:
        result = run("--config", str(cfg), *command, cwd=tmp_path)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        assert f"{tmp_path}/var/state.db does not exist" in result.stderr, command
        assert "Traceback" not in result.stderr
        assert files_under(tmp_path) == before, command
    for command in (("config", "check"), ("config", "show")):
        result = run("--config", str(cfg), *command, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        assert files_under(tmp_path) == before, command


def test_every_command_says_which_settings_file_it_uses(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f"[state]\nurl = 'sqlite:///{tmp_path}/state.db'\n")
    for command in (("status",), ("queue", "list"), ("db", "upgrade"), ("config", "check")):
        result = run("--config", str(cfg), *command, cwd=tmp_path)
        assert "settings_file" in result.stderr and str(cfg) in result.stderr, command


@pytest.mark.parametrize("content", [b"\x00garbage\xff" * 300, "business"])
def test_a_state_database_that_is_not_ours_is_named_exit_3(tmp_path: Path,
                                                           content: bytes | str) -> None:
    path = tmp_path / "state.db"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        import sqlite3

        db = sqlite3.connect(path)
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
        db.commit()
        db.close()
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f"[state]\nurl = 'sqlite:///{path}'\n")
    for command in (("status",), ("queue", "list"), ("send",), ("run",)):
        result = run("--config", str(cfg), *command, cwd=tmp_path)
        assert result.returncode == 3, (command, result.stderr)
        assert "not a klaviyo-sync state database: check state.url" in result.stderr, command
        assert "Traceback" not in result.stderr and "db upgrade" not in result.stderr


@pytest.mark.parametrize(("setting", "named"), [
    ("[daemon]\nhttp_listen = '0.0.0.0:9377'\n", "daemon.http_listen"),
    ("", "no Klaviyo API key"),
    ("[klaviyo]\nauth = 'oauth'\n", "klaviyo.oauth"),
])
def test_config_check_fails_on_what_run_would_refuse(tmp_path: Path, setting: str,
                                                     named: str) -> None:
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f"[state]\nurl = 'sqlite:///{tmp_path}/s.db'\n{setting}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    result = run("--config", str(cfg), "config", "check", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr and "OK" not in result.stdout


def connect_settings(tmp_path: Path, base_url: str) -> Path:
    from klaviyo_sync import config
    from klaviyo_sync.business.sample_data import create_schema
    from klaviyo_sync.state.db import open_state

    state_url = f"sqlite:///{tmp_path}/state.db"
    business_url = f"sqlite:///{tmp_path}/shop.db"
    open_state(state_url).dispose()
    shop = sa.create_engine(business_url)
    create_schema(shop, config.BusinessSettings())
    shop.dispose()
    (tmp_path / "system.log").write_text("2026-03-01 12:00:00 login customer=1\n")
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f"[state]\nurl = '{state_url}'\n[business]\nurl = '{business_url}'\n"
                   f"[log]\npath = '{tmp_path}/system.log'\n"
                   f"[klaviyo]\nbase_url = '{base_url}'\n")
    return cfg


def test_config_check_connect_tries_every_part_and_spends_nothing(
        tmp_path: Path, klaviyo: KlaviyoStandIn) -> None:
    cfg = connect_settings(tmp_path, klaviyo.base_url)
    env = dict(os.environ, KLAVIYO_API_KEY=API_KEY)
    result = run("--config", str(cfg), "config", "check", "--connect", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    for part in ("state database", "business database", "log", "klaviyo"):
        assert any(line.startswith(f"{part}: ok") for line in result.stdout.splitlines()), \
            (part, result.stdout)
    assert klaviyo.requests and {r.method for r in klaviyo.requests} == {"GET"}
    assert not klaviyo.events


def test_config_check_connect_reports_each_failure(tmp_path: Path,
                                                   klaviyo: KlaviyoStandIn) -> None:
    cfg = connect_settings(tmp_path, klaviyo.base_url)
    (tmp_path / "system.log").unlink()
    (tmp_path / "shop.db").write_bytes(b"not a database" * 100)
    env = dict(os.environ, KLAVIYO_API_KEY="pk_wrong")
    result = run("--config", str(cfg), "config", "check", "--connect", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("state database: ok") for line in lines), lines
    for part, why in (("business database", ""), ("log", "does not exist"),
                      ("klaviyo", "401")):
        assert any(line.startswith(f"{part}: FAILED") and why in line for line in lines), \
            (part, lines)
