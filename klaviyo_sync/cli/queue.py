"""`queue list/show/retry/purge`: inspect and repair the event queue."""

from __future__ import annotations

import json

import click

from klaviyo_sync.cli import AppContext, cli, pass_app
from klaviyo_sync.config import parse_duration_s
from klaviyo_sync.queue import EventState

_STATES = click.Choice([s.value for s in EventState])


@cli.group("queue")
def queue_group() -> None:
    """Inspect, retry and purge queued events."""


@queue_group.command("list")
@click.option("--state", type=_STATES, help="Only events in this state.")
@click.option("--metric", help="Only events of this metric.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def queue_list(app: AppContext, state: str | None, metric: str | None, limit: int,
               offset: int, as_json: bool) -> None:
    """List queued events, oldest first."""
    store = app.parts.queue
    rows = store.list(EventState(state) if state else None, metric, limit, offset)
    for event in rows:
        if as_json:
            click.echo(json.dumps(event.to_json(), default=str))
        else:
            error = f"  {event.last_error[:80]}" if event.last_error else ""
            click.echo(f"{event.id:>8}  {event.state.value:<7} {event.attempts:>2}  "
                       f"{event.occurred_at:%Y-%m-%d %H:%M:%S}  {event.metric:<18} "
                       f"{event.customer_id or '-':<10} {event.email or '-'}{error}")


@queue_group.command("show")
@click.argument("event_id", type=int)
@pass_app
def queue_show(app: AppContext, event_id: int) -> None:
    """Show one event in full, as JSON."""
    event = app.parts.queue.get(event_id)
    click.echo(json.dumps(event.to_json(), indent=2, default=str))


@queue_group.command("retry")
@click.argument("event_ids", type=int, nargs=-1)
@click.option("--metric", help="Retry every dead event of this metric.")
@click.option("--all", "all_dead", is_flag=True, help="Retry every dead event.")
@pass_app
def queue_retry(app: AppContext, event_ids: tuple[int, ...], metric: str | None,
                all_dead: bool) -> None:
    """Put dead-lettered events back in the queue with fresh attempts."""
    if not (event_ids or metric or all_dead):
        raise click.UsageError("name event ids, --metric METRIC or --all")
    store = app.parts.queue
    count = store.requeue(ids=list(event_ids) or None, metric=metric)
    click.echo(f"{count} dead event(s) queued again")


@queue_group.command("purge")
@click.option("--state", type=click.Choice(["sent", "dead"]), required=True)
@click.option("--older-than", default="30d", show_default=True,
              help="Age such as 30d, 12h, 90m.")
@click.option("--yes", is_flag=True, help="Purge dead events without asking.")
@pass_app
def queue_purge(app: AppContext, state: str, older_than: str, yes: bool) -> None:
    """Delete sent (or dead) events older than the given age."""
    from datetime import timedelta

    try:
        age = timedelta(seconds=parse_duration_s(older_than))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if state == "dead" and not yes:
        click.confirm("Dead events have not reached Klaviyo. Delete them?", abort=True)
    count = app.parts.queue.purge(EventState(state), age)
    click.echo(f"{count} {state} event(s) purged")
