"""`parse`, `replay` and `rejects list/show`: the log ingest from the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO, cast

import click

from klaviyo_sync import logconfig
from klaviyo_sync.cli import AppContext, cli, pass_app
from klaviyo_sync.cli.table import echo_table, truncate
from klaviyo_sync.config import Settings
from klaviyo_sync.exceptions import LogSourceError
from klaviyo_sync.parsers.ingest import Ingestor, IngestReport, Progress
from klaviyo_sync.parsers.rejects import RejectStore


def _ingestor(app: AppContext) -> Ingestor:
    return app.parts.ingestor


def _where(app: AppContext) -> str:
    return f"log.path in {app.settings.source}" if app.settings.source else "log.path"


@cli.command("parse")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_app
def parse_cmd(app: AppContext, as_json: bool) -> None:
    """Read the log once from where the last pass stopped, then exit.

    Follows rotation (finishes the rotated file first). The very first pass reads the
    live file from its start; rotated copies are read by `replay`. Exits 4 if the log
    file is missing.
    """
    report = _ingestor(app).run_once()
    _print(report, as_json)
    if report.file_missing:
        raise LogSourceError(f"log file not found: {report.path} ({_where(app)})")


@cli.command("replay")
@click.option("--backfill", is_flag=True,
              help="Mark every event backfill (no Klaviyo flows fire), whatever its age.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@pass_app
def replay_cmd(app: AppContext, backfill: bool, as_json: bool, progress: bool | None) -> None:
    """Read the whole log from the beginning: rotated archives oldest first, then the live
    file. Nothing already queued is queued again, so an interrupted replay is simply run
    again. Events older than log.backfill_after_hours are marked backfill."""
    ingestor = _ingestor(app)
    show = sys.stderr.isatty() if progress is None else progress
    with _progress_bar(show, app.settings) as update:
        report = ingestor.replay(backfill=backfill, progress=update)
    _print(report, as_json)
    if report.files and not as_json:
        # Replayed events carry what the log knew; the profiles pass brings every
        # customer, events or not, with their current data.
        click.echo("next: `klaviyo-sync profiles --all` sends every customer's current "
                   "profile to Klaviyo (the initial sync)")
    if not report.files:
        raise LogSourceError(
            f"nothing to replay: neither {report.path} nor rotated copies of it exist "
            f"({_where(app)})")
    if report.file_missing:
        click.echo(f"warning: {report.path} is missing; replayed its rotated copies only",
                   err=True)


class _AboveTheBar:
    """A stream for log lines while a progress bar is drawn on the same terminal: each
    line clears the bar's row first and the bar is drawn again under it, so neither
    overwrites the other."""

    def __init__(self, bar: Any, stream: TextIO) -> None:
        self._bar = bar
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write("\r\x1b[K" + text)
        if text.endswith("\n"):
            self._bar.render_progress()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


@contextmanager
def _progress_bar(show: bool, settings: Settings) -> Iterator[Progress | None]:
    if not show:
        yield None
        return
    log_settings = (settings.logging.level, settings.logging.format,
                    settings.logging.mask_emails)
    with click.progressbar(length=1, label="replaying", file=sys.stderr,
                           show_pos=False, show_percent=True, show_eta=True) as bar:
        def update(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        logconfig.configure(*log_settings,
                            stream=cast(TextIO, _AboveTheBar(bar, sys.stderr)))
        try:
            yield update
        finally:
            logconfig.configure(*log_settings)


def _print(report: IngestReport, as_json: bool) -> None:
    click.echo(json.dumps(report.to_json(), default=str) if as_json else report.summary())


@cli.group("rejects")
def rejects_group() -> None:
    """Log lines of synced event types that could not be parsed."""


@rejects_group.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def rejects_list(app: AppContext, limit: int, offset: int, as_json: bool) -> None:
    """List rejected lines, newest first."""
    found = RejectStore(app.state_engine(read_only=True)).list(limit, offset)
    if as_json:
        for reject in found:
            click.echo(json.dumps(reject.to_json()))
        return
    echo_table(("ID", "TYPE", "WHERE", "REASON", "LINE"),
               [(str(r.id), r.event_type or "-", f"{r.file}:{r.offset}", truncate(r.reason, 70),
                 truncate(r.text.replace("\r", "\\r").rstrip("\n"), 60)) for r in found],
               empty="no rejected lines", right=(0,))


@rejects_group.command("show")
@click.argument("reject_id", type=int)
@pass_app
def rejects_show(app: AppContext, reject_id: int) -> None:
    """Show one rejected line in full (as much of it as was kept), as JSON."""
    reject = RejectStore(app.state_engine(read_only=True)).get(reject_id)
    click.echo(json.dumps(reject.to_json(), indent=2))
