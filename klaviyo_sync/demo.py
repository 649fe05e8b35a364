"""`klaviyo-sync demo`: the whole pipeline on its embedded defaults, in one folder.

It writes a sample log (with rotated archives) and a sample business database (customers,
orders, and a products catalog), then runs the same passes the daemon runs: replay the
log, the orders pass, the catalog pass, a send and the profiles pass, all through the
dry-run sender, which writes the exact Klaviyo request bodies (events, catalog jobs and
profile import jobs) to an outbox file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from klaviyo_sync import config
from klaviyo_sync.app import App, connect_business_writer
from klaviyo_sync.clock import utcnow
from klaviyo_sync.demo_log import DemoCustomer, write_sample_log
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state.schema import rejects, suppressions

DEMO_CUSTOMERS = 60
DEMO_ORDERS = 150
#: Order lines name products 1-200 (sample_data), so every line links to the catalog.
DEMO_PRODUCTS = 200


@dataclass
class DemoReport:
    folder: Path
    settings_path: Path
    log_files: list[Path]
    log_lines: int
    events_by_metric: dict[str, int]
    rejects: int
    order_events: int
    sent: int
    dead: int
    outbox_requests: int
    suppressed: int
    catalog_sent: dict[str, int] = field(default_factory=dict)
    catalog_requests: int = 0
    profiles_sent: int = 0
    profile_jobs: int = 0
    missed_signups: list[Any] = field(default_factory=list)
    #: Customers the consent pass subscribed (historical, live) in the outbox's jobs.
    subscribed: dict[str, int] = field(default_factory=dict)


def settings_text(folder: Path) -> str:
    """The demo's settings file: the embedded defaults pointed at the demo folder."""
    return (
        "# Written by `klaviyo-sync demo`: the defaults, pointed at this folder.\n"
        "[log]\n"
        f'path = "{folder / "system.log"}"\n'
        "[state]\n"
        f'url = "sqlite:///{folder / "state.db"}"\n'
        "[business]\n"
        f'url = "sqlite:///{folder / "business.db"}"\n'
        "[sender]\n"
        'kind = "dry-run"\n'
        f'outbox = "{folder / "outbox.jsonl"}"\n'
        "[consent]\n"
        "enabled = true\n"
    )


#: Left in every folder the demo builds: a folder without it is not the demo's to wipe.
MARKER = ".klaviyo-sync-demo"


def claim_folder(folder: Path, force: bool = False) -> None:
    """Refuse to rebuild a folder the demo did not make (it would delete its settings,
    state and logs) unless ``force``; an absent or empty folder is the demo's to take."""
    if force or not folder.exists() or (folder / MARKER).is_file():
        return
    if not folder.is_dir():
        raise ConfigError(f"demo --dir {folder}: not a folder")
    if any(folder.iterdir()):
        raise ConfigError(
            f"demo --dir {folder}: the demo did not make this folder (no {MARKER} in it) "
            "and would overwrite its settings, state and logs: choose another folder or "
            "pass --force"
        )


def run_demo(folder: Path, force: bool = False) -> DemoReport:
    """Build the demo folder from scratch and run every pass once."""
    from klaviyo_sync.business.missed_signups import find_missed_signups
    from klaviyo_sync.business.sample_catalog import generate_catalog
    from klaviyo_sync.business.sample_data import CATEGORIES, create_schema, generate

    folder = folder.resolve()
    claim_folder(folder, force)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("This folder was made by `klaviyo-sync demo`, which may "
                                 "delete and rebuild it.\n", encoding="utf-8")
    for name in ("state.db", "state.db-wal", "state.db-shm", "business.db", "outbox.jsonl",
                 "system.log", "system.log.1", "system.log.2.gz"):
        (folder / name).unlink(missing_ok=True)
    settings_path = folder / "settings.toml"
    settings_path.write_text(settings_text(folder), encoding="utf-8")
    settings = config.load(settings_path)

    business = connect_business_writer(settings)
    create_schema(business, settings.business)
    sample = generate(business, settings.business, customers=DEMO_CUSTOMERS, orders=DEMO_ORDERS,
                      seed=7)
    generate_catalog(business, settings.catalog, DEMO_PRODUCTS, CATEGORIES,
                     utcnow().replace(microsecond=0))
    business.dispose()
    people = {str(c.id): _demo_customer(c) for c in sample.customers}
    signups = [(attempt.occurred_at, people.get(attempt.customer_id) or DemoCustomer(
        attempt.customer_id, attempt.email, attempt.first_name or "Sam",
        attempt.last_name or "Sample")) for attempt in sample.signups]
    log = write_sample_log(folder, list(people.values()), end=utcnow(), signups=signups)

    with App(settings, worker_id="demo") as app:
        engine = app.state_engine
        app.ingestor.replay()
        tracker = app.order_tracker
        order_report = tracker.run_once() if tracker else None
        catalog = app.catalog_sync
        assert catalog is not None  # the demo's settings name its business database
        catalog_report = catalog.run_once(full=True)
        app.runner.drain()
        reader = app.business_engine
        assert reader is not None  # the demo's settings name its business database
        missed = find_missed_signups(engine, reader, settings)
        profile_sync = app.profile_sync()
        assert profile_sync is not None
        profiles = profile_sync.run_once(all_customers=True)
        subscribed = _consent_pass(app)
        report = _report(folder, settings_path, log.files, log.lines, engine, order_report,
                         missed, settings)
        report.profiles_sent, report.profile_jobs = profiles.sent, profiles.jobs
        report.catalog_sent = dict(catalog_report.sent)
        report.catalog_requests = sum(catalog_report.requests.values())
        report.subscribed.update(subscribed)
        return report


def _consent_pass(app: App) -> dict[str, int]:
    """Subscribe the sample's opted-in customers (the jobs go to the outbox)."""
    sync = app.consent_sync
    assert sync is not None  # the demo's settings turn consent on
    report = sync.run_once()
    return {"historical": report.counts.get("subscribed_historical", 0),
            "live": report.counts.get("subscribed_live", 0)}


def _demo_customer(customer: Any) -> DemoCustomer:
    return DemoCustomer(id=str(customer.id), email=customer.email or f"{customer.id}@example.com",
                        first_name=customer.first_name or "Sam",
                        last_name=customer.last_name or "Sample")


def _report(folder: Path, settings_path: Path, files: tuple[Path, ...], lines: int,
            engine: sa.Engine, order_report: Any, missed: list[Any],
            settings: config.Settings) -> DemoReport:
    queue = QueueStore(engine)
    by_metric = queue.metric_counts(source="log")
    by_state = queue.counts()
    order_events = queue.source_count("order")
    with engine.connect() as conn:
        reject_count = conn.execute(sa.select(sa.func.count()).select_from(rejects)).scalar()
        suppressed = conn.execute(sa.select(sa.func.count()).select_from(suppressions)
                                  .where(suppressions.c.state == "sent")).scalar()
    outbox = Path(settings.sender.outbox)
    requests = [json.loads(line) for line in outbox.read_text().splitlines()] \
        if outbox.exists() else []
    return DemoReport(
        folder=folder, settings_path=settings_path, log_files=list(files), log_lines=lines,
        events_by_metric={str(k): int(v) for k, v in by_metric.items()},
        rejects=int(reject_count or 0), order_events=order_events,
        sent=by_state.get("sent", 0), dead=by_state.get("dead", 0),
        outbox_requests=len(requests), suppressed=int(suppressed or 0), missed_signups=missed,
    )
