"""`catalog` (one catalog pass, then exit) and `catalog failed` (what Klaviyo refused)."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
from types import FrameType

import click

from klaviyo_sync.cli import AppContext, cli, pass_app
from klaviyo_sync.exceptions import ConfigError


@cli.group("catalog", invoke_without_command=True)
@click.option("--all", "full", is_flag=True,
              help="Compare every product (and delete from Klaviyo what vanished), not just "
                   "those whose updated_at moved.")
@click.option("--dry-run", is_flag=True,
              help="Write the job bodies to the outbox (sender.outbox) and record nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the pass's report as JSON.")
@click.pass_context
def catalog(ctx: click.Context, full: bool, dry_run: bool, as_json: bool) -> None:
    """Sync Klaviyo's catalog (categories, items, variants) with the products table."""
    if ctx.invoked_subcommand is not None:
        return
    from klaviyo_sync.app import App

    app = ctx.find_object(AppContext)
    assert app is not None  # the root group always sets it
    settings = app.settings
    if not settings.business.url:
        raise ConfigError("the catalog pass is off: business.url is empty")
    if not settings.catalog.enabled:
        raise ConfigError("the catalog pass is off: catalog.enabled = false")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    parts = app.parts
    if dry_run:  # the same state database, the dry-run sender whatever sender.kind says
        parts = App(settings.replace(sender=dataclasses.replace(settings.sender,
                                                                kind="dry-run")),
                    state_engine=app.state_engine())
    try:
        sync = parts.catalog_sync
        assert sync is not None  # business and catalog are on: checked above
        report = sync.run_once(full=full, dry_run=dry_run, stop=stop)
    finally:
        if parts is not app.parts:
            parts.close()
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    if report.off:
        click.echo(f"the catalog pass is off: {report.off}")
        return
    what = "every product" if report.full else "changed products"
    click.echo(f"{report.products} product(s) read ({what}); "
               f"{sum(report.sent.values())} object(s) sent in "
               f"{sum(report.requests.values())} request(s); {report.failed} refused"
               + (" (dry run: nothing recorded)" if dry_run else ""))
    for key in sorted(report.sent):
        click.echo(f"  {key:<18} {report.sent[key]:>6} in {report.requests[key]} request(s)")
    if report.failed:
        click.echo("see `klaviyo-sync catalog failed` for Klaviyo's detail", err=True)


@catalog.command("failed")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def catalog_failed(app: AppContext, as_json: bool) -> None:
    """Catalog objects Klaviyo refused, with its detail (retried by every pass)."""
    from klaviyo_sync.catalog.store import CatalogStore

    rows = CatalogStore(app.state_engine()).failed()
    for row in rows:
        if as_json:
            click.echo(json.dumps({"kind": row.kind.value, "external_id": row.external_id,
                                   "in_klaviyo": row.in_klaviyo, "error": row.last_error,
                                   "updated_at": row.updated_at.isoformat()}))
        else:
            click.echo(f"{row.kind.value:<9} {row.external_id:<24} {row.last_error or ''}")
    if not as_json:
        click.echo(f"{len(rows)} refused catalog object(s)", err=True)
