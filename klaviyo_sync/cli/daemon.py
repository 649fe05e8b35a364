"""`run` (the daemon) and `status` (how it is doing; exit 0 healthy, 1 degraded, 2 failing)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from klaviyo_sync import config
from klaviyo_sync.cli import AppContext, cli, pass_app
from klaviyo_sync.exceptions import KlaviyoSyncError, StateError


@cli.command("run")
@pass_app
def run_cmd(app: AppContext) -> None:
    """Run the daemon: tail, send, orders, retry and prune on the [schedule] intervals.

    SIGTERM/SIGINT finish the batch in flight and exit 0; SIGHUP reloads the settings file.
    Under systemd (Type=notify) it reports READY=1, STATUS= and WATCHDOG=1.
    """
    from klaviyo_sync.daemon.service import Daemon
    from klaviyo_sync.daemon.systemd import Notifier

    settings = app.settings
    source = settings.source

    def reload_settings() -> config.Settings:
        return config.load(source)

    notifier = Notifier.from_environ(os.environ, os.getpid())
    daemon = Daemon(settings, notifier, load_settings=reload_settings if source else None)
    code = daemon.run()
    if daemon.abandoned_threads:
        # A pass that ignored the stop event still runs in a worker thread, and the
        # interpreter would wait for it at exit; its leases expire and nothing is lost.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@pass_app
def status_cmd(app: AppContext, as_json: bool) -> None:
    """Passes, log, queue, business database, credentials: exit 0 healthy, 1 degraded,
    2 failing, 3 unknown (the state database or the settings cannot be read).

    These four codes are all `status` exits with, as monitoring plugins expect; the line
    (or `decided_by` in --json) names the check that decided.
    """
    from klaviyo_sync.daemon.health import Health, compute_status, failing_status

    try:
        settings = app.settings
        business = _business_engine(settings)
        try:
            status = compute_status(settings, app.state_engine(read_only=True),
                                    business=business)
        finally:
            if business is not None:
                business.dispose()
    except KlaviyoSyncError as exc:
        # A missing or foreign state database, a bad setting: nothing is known (3),
        # said on stdout for the monitor and on stderr for the person.
        check = "state_db" if isinstance(exc, StateError) else "settings"
        data = failing_status(f"{_LABELS[check]}: {exc}", health=Health.UNKNOWN,
                              check=check)
        click.echo(json.dumps(data) if as_json else
                   f"klaviyo-sync: unknown (decided by {check})\n  - {data['reasons'][0]}")
        click.echo(f"klaviyo-sync: error: {exc}", err=True)
        sys.exit(Health.UNKNOWN.exit_code)
    data = status.to_json()
    click.echo(json.dumps(data, default=str) if as_json else _render(data))
    sys.exit(status.health.exit_code)


_LABELS = {"state_db": "state database", "settings": "settings"}


def _business_engine(settings: Any) -> Any:
    """The business database to ping, when the orders pass is expected to read it."""
    if not (settings.business.url and settings.orders.enabled):
        return None
    from klaviyo_sync.business.db import open_business

    return open_business(settings.business.url)


def _render(d: dict[str, Any]) -> str:
    q, tail = d["queue"], d["tail"]
    decided = f" (decided by {d['decided_by']})" if d.get("decided_by") else ""
    lines = [f"klaviyo-sync: {d['health']}{decided}"]
    row = lines.append

    def item(label: str, value: str) -> None:
        row(f"  {label:<13}{value}")

    item("queue", ", ".join(f"{n:,} {s}" for s, n in q.items()))
    oldest = d["oldest_due_at"]
    item("oldest due", f"{oldest} ({_ago(d['oldest_due_age_s'])} ago)" if oldest else "none")
    behind = tail["bytes_behind"]
    where = f"{tail['file']} at offset {tail['offset']:,}" if tail["file"] else "not started"
    item("log", tail["log_path"] + (f" ({tail['log_error']})" if tail["log_error"] else ""))
    item("tail", f"{where}, {tail['lines_read']:,} lines read, "
         f"{'?' if behind is None else f'{behind:,}'} bytes behind")
    item("rejects", f"{d['rejects']:,} (klaviyo-sync rejects list)")
    item("dead letters", f"{d['dead_letters']:,}")
    item("last send", d["last_send_ok_at"] or "never")
    auth = d["auth_failure"]
    item("credentials", "no refusal recorded" if not auth else
         f"REFUSED since {auth.get('at')} ({auth.get('status', '')} {auth.get('detail', '')})")
    orders = d["last_orders_pass_at"] or "never"
    item("orders pass", orders if d["orders_expected"] else "off (no business.url or disabled)")
    item("last tail", d["last_tail_at"] or "never")
    item("suppressions", f"{d['suppressions_pending']:,} pending")
    p = d.get("profiles") or {}
    item("profiles", f"{p.get('imported', 0):,} imported, {p.get('failed', 0):,} failed "
         f"(klaviyo-sync profiles failed), {p.get('unread_jobs', 0):,} job(s) unread; "
         f"last pass {d.get('last_profiles_pass_at') or 'never'}")
    erased = d.get("erasures") or {}
    if erased.get("requests"):
        item("erasures", f"{erased['requests']:,} request(s); {erased['skipped']:,} later "
             "event(s) skipped for erasure (klaviyo-sync forget --list)")
    if d.get("business_error"):
        item("business db", f"NO ANSWER ({d['business_error']})")
    for name, record in (d.get("passes") or {}).items():
        state = (f"FAILED {record['failures']}x in a row: {record['last_error']}"
                 if record["failures"] else "ok")
        item(f"{name} pass", f"{state}; last success {record['last_ok_at'] or 'never'}")
    for reason in d["reasons"]:
        row(f"  - {reason}")
    return "\n".join(lines)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"

