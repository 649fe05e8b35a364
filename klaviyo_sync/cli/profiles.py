"""`profiles` (send changed customers as profiles), `profiles failed`, `profiles retry`."""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import asdict
from types import FrameType

import click

from klaviyo_sync.cli import AppContext, cli, pass_app
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.profile_sync import ProfileSync


def _profile_sync(app: AppContext, dry_run: bool) -> ProfileSync:
    """The pass, from the app's parts (the outbox instead of Klaviyo with ``dry_run``)."""
    settings = app.settings
    sync = app.parts.profile_sync(dry_run=dry_run)
    if sync is None:
        why = ("business.url is empty (the pass reads the customers table)"
               if not settings.business.url else "profiles.enabled = false")
        raise ConfigError(f"the profiles pass is off: {why}")
    return sync


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    return stop


@cli.group("profiles", invoke_without_command=True)
@click.option("--all", "all_customers", is_flag=True,
              help="Read every customer, not only those changed since the last pass (the "
                   "initial sync); unchanged imported profiles are still not sent again.")
@click.option("--dry-run", is_flag=True,
              help="Write the import jobs' exact bodies to [sender] outbox; record nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the pass's report as JSON.")
@click.pass_context
def profiles(ctx: click.Context, all_customers: bool, dry_run: bool, as_json: bool) -> None:
    """Send new and changed customers to Klaviyo as profiles (bulk import jobs), read the
    jobs back, record which profiles Klaviyo imported. One pass, then exit."""
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(AppContext)
    assert app is not None
    stop = _stop_on_signals()
    report = _profile_sync(app, dry_run).run_once(stop, all_customers=all_customers)
    click.echo(json.dumps(asdict(report)) if as_json else report.summary())


@profiles.command("failed")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def profiles_failed(app: AppContext, limit: int | None, as_json: bool) -> None:
    """Customers whose profile Klaviyo did not import, with Klaviyo's detail."""
    from klaviyo_sync.state.profiles import ProfileStore

    rows = ProfileStore(app.state_engine()).failed(limit)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row.to_json()))
        else:
            click.echo(f"{row.updated_at:%Y-%m-%d %H:%M}  {row.customer_id:<12} "
                       f"{row.job_id or '-':<14} {row.last_error or ''}")
    if not as_json:
        click.echo(f"{len(rows)} failed profile(s)", err=True)


@profiles.command("retry")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def profiles_retry(app: AppContext, as_json: bool) -> None:
    """Send every failed customer's current profile again and read the jobs back."""
    stop = _stop_on_signals()
    report = _profile_sync(app, dry_run=False).retry(stop)
    click.echo(json.dumps(asdict(report)) if as_json else report.summary())
