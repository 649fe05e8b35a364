"""`config check`, `config show` and `db upgrade`: settings and schema housekeeping."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click

from klaviyo_sync.cli import AppContext, cli, pass_app


@cli.group("config")
def config_group() -> None:
    """Check or show the settings in force."""


@config_group.command("check")
@click.option("--connect", is_flag=True,
              help="Also try the state and business databases, the log and Klaviyo "
                   "(a read that spends nothing).")
@pass_app
def config_check(app: AppContext, connect: bool) -> None:
    """Validate the settings as `run` would; exit 2 naming the key if anything is wrong."""
    from klaviyo_sync import preflight

    settings = app.settings
    problems = preflight.refusals(settings)
    for problem in problems:
        click.echo(f"klaviyo-sync: error: {problem}", err=True)
    failed = bool(problems)
    if connect:
        for result in preflight.connect_all(settings):
            click.echo(f"{result.part}: {'ok' if result.ok else 'FAILED'}: {result.detail}")
            failed = failed or not result.ok
    if failed:
        sys.exit(2)
    click.echo(f"{settings.source}: OK")


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@pass_app
def config_show(app: AppContext, as_json: bool) -> None:
    """Print every setting in force, defaults included, credentials as ***."""
    data = app.settings.redacted()
    data.pop("source", None)
    data["klaviyo"]["api_key"] = "***" if app.settings.api_key() else "(not set)"
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"# from {app.settings.source}")
    for line in _toml_lines(data, ""):
        click.echo(line)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    # A JSON string is a valid TOML basic string; booleans and numbers need TOML spelling.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _toml_lines(table: dict[str, Any], prefix: str) -> list[str]:
    """A table as TOML: its plain keys first, then each sub-table under its own header.
    Keys whose value is None (not set) become comments, as TOML has no null."""
    lines = []
    for key, value in table.items():
        if value is None:
            lines.append(f"# {_toml_key(key)} is not set")
        elif not isinstance(value, dict):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
            lines += ["", f"[{name}]", *_toml_lines(value, name)]
    return lines


@cli.group("db")
def db_group() -> None:
    """The state database's schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target schema revision.")
@pass_app
def db_upgrade(app: AppContext, revision: str) -> None:
    """Create or migrate the state database to this version's schema."""
    from klaviyo_sync.app import connect_state
    from klaviyo_sync.state import db

    engine = connect_state(app.settings)
    try:
        before = db.schema_status(engine)
        after = db.upgrade(engine, revision)
    finally:
        engine.dispose()
    click.echo(f"state database: schema {before.current or 'none'} -> {after.current}")


@db_group.command("status")
@pass_app
def db_status(app: AppContext) -> None:
    """Show the schema revision of the state database and the one this version needs."""
    from klaviyo_sync.app import connect_state
    from klaviyo_sync.state import db

    engine = connect_state(app.settings, create=False)
    try:
        status = db.schema_status(engine)
    finally:
        engine.dispose()
    state = "up to date" if status.up_to_date else "needs `klaviyo-sync db upgrade`"
    click.echo(f"schema {status.current or 'none'} (this version: {status.head}): {state}")
