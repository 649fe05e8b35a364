"""`consent` (subscribe new opt-ins), `consent reconcile`, `consent list`, `optouts`,
`optouts list`: consent both ways between the business and Klaviyo."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from klaviyo_sync.cli import AppContext, cli, pass_app
from klaviyo_sync.exceptions import ConfigError, SendError

_FORMAT = click.Choice(["table", "csv", "json"])


def _off(app: AppContext) -> ConfigError:
    if not app.settings.business.url:
        return ConfigError("consent needs the business database: business.url is empty")
    return ConfigError("consent is off: set [consent] enabled = true (run `klaviyo-sync "
                       "consent reconcile --dry-run` first)")


def _render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    if fmt == "json":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    widths = {c: max([len(c)] + [len(str(r.get(c) if r.get(c) is not None else "-"))
                                 for r in rows]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c) if r.get(c) is not None else "-").ljust(widths[c])
                        for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _fail_on(error: str | None) -> None:
    if error:
        raise SendError(f"consent: {error}")


@cli.group("consent", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the pass's report as JSON.")
@click.pass_context
def consent_group(ctx: click.Context, as_json: bool) -> None:
    """Subscribe customers whose email opt-in turned on: one pass, then exit."""
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(AppContext)
    assert app is not None
    sync = app.parts.consent_sync
    if sync is None:
        raise _off(app)
    report = sync.run_once()
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "nothing"
        click.echo(f"{report.customers_read} customer(s) read, {report.requests} "
                   f"subscription request(s): {counts}")
    _fail_on(report.error)


@consent_group.command("reconcile")
@click.option("--dry-run", is_flag=True, help="Only compare and print: change nothing.")
@click.option("--format", "fmt", type=_FORMAT, default="table", show_default=True)
@pass_app
def consent_reconcile(app: AppContext, dry_run: bool, fmt: str) -> None:
    """Compare every customer's opt-in with Klaviyo's consent; apply unless --dry-run."""
    reconciler = app.parts.reconciler(dry_run)
    if reconciler is None:
        raise _off(app)
    report = reconciler.run(dry_run)
    rows = [r.to_json() for r in report.rows]
    click.echo(_render(rows, ("customer_id", "email", "business_opt_in_at", "klaviyo",
                              "action"), fmt), nl=False)
    click.echo(("dry run, nothing changed: " if dry_run else "applied: ") + report.summary(),
               err=True)
    if report.applied is not None:
        done = ", ".join(f"{k} {v}" for k, v in sorted(report.applied.counts.items()))
        click.echo(f"subscription requests {report.applied.requests}: {done or 'none'}",
                   err=True)
        _fail_on(report.applied.error)


@consent_group.command("list")
@click.option("--state", type=click.Choice(["pending", "sending", "subscribed", "conflict",
                                            "refused", "opted_out", "invalid_phone"]),
              help="Only rows in this state (email or SMS).")
@click.option("--format", "fmt", type=_FORMAT, default="table", show_default=True)
@pass_app
def consent_list(app: AppContext, state: str | None, fmt: str) -> None:
    """What the consent pass did per customer: conflicts, refusals, invalid phones, ..."""
    from klaviyo_sync.business.consent_rules import ConsentState
    from klaviyo_sync.business.consent_sync import list_consent

    rows = [r.to_json() for r in list_consent(app.state_engine(),
                                              ConsentState(state) if state else None)]
    click.echo(_render(rows, ("customer_id", "email", "state", "phone", "sms_state",
                              "consented_at", "reason"), fmt), nl=False)
    click.echo(f"{len(rows)} row(s)", err=True)


@cli.group("optouts", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the pass's report as JSON.")
@click.pass_context
def optouts_group(ctx: click.Context, as_json: bool) -> None:
    """Read opt-outs made in Klaviyo since the last pass: one pass, then exit."""
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import asdict

    app = ctx.find_object(AppContext)
    assert app is not None
    optouts = app.parts.optouts
    if optouts is None:
        raise _off(app)
    report = optouts.run_once()
    if as_json:
        click.echo(json.dumps(asdict(report)))
    else:
        click.echo(f"{report.profiles} profile(s) in {report.pages} page(s): "
                   f"{report.recorded} new opt-out(s), {report.ours} of our own "
                   f"suppressions, {report.written_back} written back; cursor "
                   f"{report.cursor or '-'}")


@optouts_group.command("list")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only opt-outs made at or after this UTC time.")
@click.option("--format", "fmt", type=_FORMAT, default="table", show_default=True)
@pass_app
def optouts_list(app: AppContext, since: datetime | None, fmt: str) -> None:
    """Opt-outs made in Klaviyo for the business to apply (never our own suppressions)."""
    from klaviyo_sync.business.optouts import list_optouts

    rows = [r.to_json() for r in list_optouts(app.state_engine(), since)]
    click.echo(_render(rows, ("at", "email", "customer_id", "reason", "state",
                              "written_back_at"), fmt), nl=False)
    click.echo(f"{len(rows)} opt-out(s)", err=True)


