"""`config check`, `config show` and `db upgrade`: settings and schema housekeeping."""

from __future__ import annotations

import json

import click

from klaviyo_sync.cli import AppContext, cli, pass_app


@cli.group("config")
def config_group() -> None:
    """Check or show the settings in force."""


@config_group.command("check")
@pass_app
def config_check(app: AppContext) -> None:
    """Validate the settings file; exit 2 naming the key if anything is wrong."""
    settings = app.settings
    problems = []
    if settings.sender.kind == "klaviyo" and settings.klaviyo.auth == "api_key" \
            and not settings.api_key():
        problems.append(
            f"no Klaviyo API key: set ${settings.klaviyo.api_key_env} or klaviyo.api_key_file"
        )
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    click.echo(f"{settings.source}: OK")


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML-like text.")
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
    for section, values in data.items():
        if not isinstance(values, dict):
            continue
        click.echo(f"\n[{section}]")
        for key, value in values.items():
            click.echo(f"{key} = {json.dumps(value, default=str)}")


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

    engine = connect_state(app.settings)
    try:
        status = db.schema_status(engine)
    finally:
        engine.dispose()
    state = "up to date" if status.up_to_date else "needs `klaviyo-sync db upgrade`"
    click.echo(f"schema {status.current or 'none'} (this version: {status.head}): {state}")
