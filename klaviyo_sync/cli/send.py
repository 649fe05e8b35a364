"""`send` (drain what is due to Klaviyo, then exit) and `audit` (the request trail)."""

from __future__ import annotations

import json
import signal
import threading
from datetime import timedelta
from types import FrameType

import click

from klaviyo_sync.cli import AppContext, cli, pass_app
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import parse_duration_s


@cli.command("send")
@click.option("--max-batches", type=click.IntRange(min=1), default=None,
              help="Stop after this many batches (default: until nothing is due).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@pass_app
def send(app: AppContext, max_batches: int | None, as_json: bool) -> None:
    """Send every event that is due to Klaviyo, then exit.

    SIGTERM or Ctrl-C finishes the batches in hand and exits. Exits 6 if Klaviyo refused
    the credentials (nothing is lost: the events stay queued).
    """
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    report = app.parts.runner.drain(stop, max_batches=max_batches)
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        click.echo(report.summary())
    # The same error the daemon's send pass raises for the same report (exit code 6 for
    # refused credentials, 5 for the business database).
    stopped = report.stopped_by()
    if stopped is not None:
        raise stopped


@cli.command("audit")
@click.option("--since", default=None, metavar="AGE",
              help="Only requests newer than this age, e.g. 1h, 30m, 7d.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def audit(app: AppContext, since: str | None, limit: int, as_json: bool) -> None:
    """Show the requests made to Klaviyo, newest first."""
    from klaviyo_sync.senders.audit import list_audit

    cutoff = None
    if since:
        try:
            cutoff = utcnow() - timedelta(seconds=parse_duration_s(since))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    for row in list_audit(app.state_engine(), cutoff, limit):
        if as_json:
            click.echo(json.dumps(row.to_json()))
        else:
            status = row.status_code if row.status_code is not None else "---"
            codes = f"  {row.error_codes}" if row.error_codes else ""
            click.echo(f"{row.at:%Y-%m-%d %H:%M:%S}  {row.method:<4} {row.endpoint:<44} "
                       f"{row.items:>5}  {status}  {row.duration_ms:>8.1f} ms{codes}")
