"""`klaviyo-sync demo`: run the whole pipeline on sample data in one folder."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from klaviyo_sync import logconfig
from klaviyo_sync.cli import cli


@cli.command("demo")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=Path("klaviyo-sync-demo"), show_default=True,
              help="Folder for the sample log, databases, settings and outbox (recreated).")
@click.option("--force", is_flag=True,
              help="Rebuild the folder even if the demo did not make it.")
def demo(folder: Path, force: bool) -> None:
    """Write a sample log and business database, ingest them, and dry-run the delivery.

    Nothing is sent to Klaviyo: the dry-run sender writes the exact request bodies it
    would send to OUTBOX. Afterwards every other command works on the demo folder with
    `--config DIR/settings.toml`.
    """
    from klaviyo_sync.demo import run_demo

    logconfig.configure("warning")
    report = run_demo(folder, force)
    cfg = report.settings_path
    click.echo(f"Demo folder: {report.folder}")
    click.echo(f"  sample log: {', '.join(p.name for p in report.log_files)} "
               f"({report.log_lines} lines, rotated archives included)")
    click.echo(f"  business database: {report.folder / 'business.db'}")
    click.echo("\nLog events queued (replay, oldest archive first):")
    for metric, count in sorted(report.events_by_metric.items()):
        click.echo(f"  {count:>5}  {metric}")
    click.echo(f"  {report.rejects:>5}  malformed lines kept as rejects (`rejects list`)")
    click.echo(f"\nOrders pass: {report.order_events} order events enqueued")
    sent = report.catalog_sent
    click.echo(f"Catalog pass: {sent.get('category create', 0)} categories, "
               f"{sent.get('item create', 0)} items and {sent.get('variant create', 0)} "
               f"variants in {report.catalog_requests} bulk job bodies")
    click.echo(f"Dry-run send: {report.sent} events sent, {report.dead} dead-lettered, "
               f"{report.suppressed} emails suppressed")
    click.echo(f"Profiles pass: {report.profiles_sent} customers as profiles in "
               f"{report.profile_jobs} import job(s)")
    click.echo(f"  {report.outbox_requests} request bodies written to "
               f"{report.folder / 'outbox.jsonl'}")
    click.echo(f"Consent pass: {report.subscribed.get('historical', 0)} opted-in customers "
               f"subscribed as historical, {report.subscribed.get('live', 0)} live "
               "(profile-subscription jobs in the outbox)")
    click.echo(f"\nMissed signups: {len(report.missed_signups)} people started signing up "
               "but now lack a box, a schedule or Active status")
    click.echo("\nTry next:")
    prog = _invoked_as()
    for command in ("status", "queue list --limit 10", "rejects list", "missed-signups",
                    "catalog failed", "audit"):
        click.echo(f"  {prog} --config {cfg} {command}")


def _invoked_as() -> str:
    """How to run this program again: `klaviyo-sync` when that is what PATH finds,
    else the path it was started by (a virtualenv not activated), or `python -m`."""
    argv0 = sys.argv[0]
    if argv0.endswith("__main__.py"):
        return f"{sys.executable} -m klaviyo_sync"
    found = shutil.which("klaviyo-sync")
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return "klaviyo-sync"
    return argv0
