"""`forget`: erase one person in Klaviyo and in our own state; `forget --list`."""

from __future__ import annotations

import json

import click

from klaviyo_sync.cli import AppContext, cli, pass_app


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

    rows = list_erasures(app.state_engine())
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_json()))
        return
    if not rows:
        click.echo("no erasure requests")
        return
    header = f"{'id':>5}  {'requested at':<25}  {'by':<9}  {'state':<9}  {'removed':>8}  " \
             f"{'skipped':>7}  klaviyo"
    click.echo(header)
    for r in rows:
        data = r.to_json()
        answer = (f"{r.klaviyo_status or '-'} {r.klaviyo_detail or ''}").strip()
        click.echo(f"{r.id:>5}  {data['requested_at']:<25}  {r.asked_by:<9}  {r.state:<9}  "
                   f"{sum(r.removed.values()):>8,}  {r.skipped:>7,}  {answer}")

