"""Commands of the business stage: `orders`, `suppressions list`, `missed-signups`."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import click

from klaviyo_sync.cli import AppContext, cli, pass_app
from klaviyo_sync.cli.table import echo_table, truncate
from klaviyo_sync.exceptions import ConfigError


@cli.command("orders")
@click.option("--reread-all", is_flag=True,
              help="Forget the watermark and read every order again (events already "
                   "enqueued are not enqueued again).")
@click.option("--json", "as_json", is_flag=True, help="Print the pass's report as JSON.")
@pass_app
def orders(app: AppContext, reread_all: bool, as_json: bool) -> None:
    """Turn new and changed orders into events: one pass, then exit."""
    settings = app.settings
    tracker = app.parts.order_tracker
    if tracker is None:
        why = "business.url is empty" if not settings.business.url else "orders.enabled = false"
        raise ConfigError(f"the orders pass is off: {why}")
    if reread_all:
        tracker.reread_all()
    report = tracker.run_once()
    if as_json:
        click.echo(json.dumps(asdict(report)))
        return
    click.echo(f"{report.orders_read} order(s) read in {report.pages} page(s): "
               f"{report.orders_new} new, {report.orders_changed} changed, "
               f"{report.unknown_status} with an unknown status; "
               f"{report.events_enqueued} event(s) enqueued")
    for metric, count in sorted(report.by_metric.items()):
        click.echo(f"  {metric:<16} {count}")


@cli.group("suppressions")
def suppressions_group() -> None:
    """Who was put on Klaviyo's suppression list, when and why."""


@suppressions_group.command("list")
@click.option("--state", type=click.Choice(
    ["pending", "sent", "unsuppressing", "unsuppressed", "rejected"]),
    help="Only rows in this state.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def suppressions_list(app: AppContext, state: str | None, limit: int | None,
                      as_json: bool) -> None:
    """List suppressions, newest first."""
    from klaviyo_sync.business.suppression import SuppressionState, list_suppressions

    rows = list_suppressions(app.state_engine(read_only=True),
                             SuppressionState(state) if state else None, limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_json()))
        return
    echo_table(("CREATED (UTC)", "STATE", "SENT (UTC)", "REASON", "CUSTOMER", "EMAIL",
                "LAST ERROR"),
               [(f"{r.created_at:%Y-%m-%d %H:%M}", r.state.value,
                 f"{r.sent_at:%Y-%m-%d %H:%M}" if r.sent_at else "-", r.reason,
                 r.customer_id or "-", r.email, truncate(r.last_error or "", 80))
                for r in rows], empty="no suppressions")
    if rows:
        click.echo(f"{len(rows)} suppression(s)", err=True)


@cli.command("missed-signups")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="First day (UTC) of started.signup attempts to consider.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]),
              help="Last day (UTC, inclusive) of attempts to consider.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write to this file instead of standard output.")
@click.option("--include-klaviyo", is_flag=True,
              help="Also count the front end's Started Checkout events, read from Klaviyo.")
@pass_app
def missed_signups(app: AppContext, since: datetime | None, until: datetime | None, fmt: str,
                   output: Path | None, include_klaviyo: bool) -> None:
    """People who started signing up but now lack a box, a schedule or the active status."""
    from klaviyo_sync.business.missed_signups import history_starts, render

    if since and until and until < since:
        raise click.BadParameter("--until is before --since", param_hint="--until")
    settings = app.settings
    # Only reading (no Klaviyo call, no profile flag written): a missing state database is
    # "no attempt recorded yet", and nothing is created.
    reads_only = not include_klaviyo and not settings.missed_signups.write_profile_flag
    parts = app.reading_lazily() if reads_only else app.parts
    outcome = parts.missed_signups(since.date() if since else None,
                                   until.date() if until else None, include_klaviyo)
    complete_from = history_starts(settings)
    if not outcome.log_read:
        click.echo(f"note: no state database yet ({settings.state.url}): no attempt from the "
                   "log is recorded; run `klaviyo-sync replay` or the daemon first", err=True)
    elif since is None or since < complete_from:
        click.echo(f"note: delivered attempts are kept {settings.sender.sent_retention} "
                   f"(sender.sent_retention): the log's attempts are complete from "
                   f"{complete_from:%Y-%m-%d %H:%M} UTC", err=True)
    text = render(outcome.missed, fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"{len(outcome.missed)} missed signup(s) written to {output}", err=True)
