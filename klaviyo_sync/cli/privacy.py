"""`forget`: erase one person in Klaviyo and in our own state; `forget --list`."""

from __future__ import annotations

import json

import click

from klaviyo_sync.cli import AppContext, cli, pass_app
from klaviyo_sync.cli.table import echo_table


@cli.command("forget")
@click.option("--email", default=None, help="The person's email address.")
@click.option("--customer", "customer_id", default=None, help="The person's customer id.")
@click.option("--dry-run", is_flag=True,
              help="Count what would be removed; change nothing, ask Klaviyo nothing.")
@click.option("--list", "list_requests", is_flag=True,
              help="The erasure requests made so far (no personal data).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def forget(app: AppContext, email: str | None, customer_id: str | None, dry_run: bool,
           list_requests: bool, as_json: bool) -> None:
    """Honour an erasure request (GDPR, CCPA): ask Klaviyo to delete the profile, cancel
    the person's pending events and remove or blank their data in the state database and
    the dry-run outbox, then print what was removed, by table.

    A tombstone (keyed hashes, never the clear values) keeps later log lines, orders and
    suppressions of that person from reaching Klaviyo. Safe to run again: an interrupted
    request is completed, and Klaviyo is asked only once.
    """
    if list_requests:
        _list(app, as_json)
        return
    if (email is None) == (customer_id is None):
        raise click.UsageError("give exactly one of --email or --customer (or --list)")
    result = app.parts.forgetter(ask_klaviyo=not dry_run).forget(
        email=email, customer_id=customer_id, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    title = "would remove" if dry_run else "removed"
    click.echo(f"{title}, by table:")
    for table, count in {**result.removed, "outbox_lines": result.outbox_lines}.items():
        click.echo(f"  {table:<16}{count:>8,}")
    click.echo(f"klaviyo: {result.klaviyo}")
    if result.erasure_id is not None:
        click.echo(f"request #{result.erasure_id} recorded (see `klaviyo-sync forget --list`)")


def _list(app: AppContext, as_json: bool) -> None:
    from klaviyo_sync.privacy.forget import list_erasures

    rows = list_erasures(app.state_engine(read_only=True))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_json()))
        return
    echo_table(("ID", "REQUESTED (UTC)", "BY", "STATE", "REMOVED", "SKIPPED", "KLAVIYO"),
               [(str(r.id), f"{r.requested_at:%Y-%m-%d %H:%M:%S}", r.asked_by, r.state,
                 f"{sum(r.removed.values()):,}", f"{r.skipped:,}",
                 f"{r.klaviyo_status or '-'} {r.klaviyo_detail or ''}".strip())
                for r in rows],
               empty="no erasure requests", right=(0, 4, 5))
