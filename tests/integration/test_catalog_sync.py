"""The catalog pass in-process against the stand-in, on each state backend: the job record
around each POST, recovery of a job lost mid-POST, whole-request refusals, the jobs-in-
progress cap, and the stand-in's own checks of what it is sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from structlog.testing import capture_logs

from klaviyo_sync.app import App
from klaviyo_sync.business.sample_catalog import catalog_tables, generate_catalog
from klaviyo_sync.catalog.store import CatalogStore, SyncState
from klaviyo_sync.catalog.sync import CatalogSync, build_catalog_sync
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import (
    BusinessSettings,
    CatalogSettings,
    KlaviyoSettings,
    SenderSettings,
    Settings,
)
from klaviyo_sync.senders.base import Sender
from klaviyo_sync.senders.catalog import CatalogAction, CatalogKind, JobStatus
from klaviyo_sync.state.schema import catalog_jobs
from tests.klaviyo_standin import KlaviyoStandIn

API_KEY = "pk_test_standin"
T0 = datetime(2026, 3, 1, 9, 0)
HEADERS = {"Authorization": f"Klaviyo-API-Key {API_KEY}", "revision": "2026-07-15",
           "Content-Type": "application/vnd.api+json"}


@pytest.fixture
def parts(tmp_path: Path, state_engine: sa.Engine, klaviyo: KlaviyoStandIn,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, sa.Engine, Sender]]:
    url = f"sqlite:///{tmp_path / 'business.db'}"
    writer = sa.create_engine(url)
    generate_catalog(writer, CatalogSettings(), 250, ["Tea", "Coffee", "Snacks"], T0)
    writer.dispose()
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    settings = Settings(business=BusinessSettings(url=url),
                        klaviyo=KlaviyoSettings(base_url=klaviyo.base_url),
                        catalog=CatalogSettings(job_poll_s=0.01),
                        sender=SenderSettings(outbox=str(tmp_path / "outbox.jsonl")))
    app = App(settings, state_engine=state_engine)
    assert app.business_engine is not None
    yield settings, app.business_engine, app.sender
    app.close()


def sync_of(parts: tuple[Settings, sa.Engine, Sender], state_engine: sa.Engine,
            **catalog: object) -> CatalogSync:
    settings, business, sender = parts
    if catalog:
        settings = settings.replace(catalog=CatalogSettings(**{"job_poll_s": 0.01, **catalog}))
    sync = build_catalog_sync(settings, state_engine, business, sender)
    assert sync is not None
    return sync


def test_each_job_is_recorded_and_read_back(parts: tuple[Settings, sa.Engine, Sender],
                                            state_engine: sa.Engine,
                                            klaviyo: KlaviyoStandIn) -> None:
    report = sync_of(parts, state_engine).run_once(full=True)
    assert report.sent == {"category create": 3, "item create": 250, "variant create": 166}
    assert report.requests == {"category create": 1, "item create": 3, "variant create": 2}
    with state_engine.connect() as conn:
        jobs = conn.execute(sa.select(catalog_jobs).order_by(catalog_jobs.c.id)).fetchall()
    assert [(j.kind, j.action, j.status, j.total) for j in jobs] == [
        ("category", "create", "complete", 3), ("item", "create", "complete", 100),
        ("item", "create", "complete", 100), ("item", "create", "complete", 50),
        ("variant", "create", "complete", 100), ("variant", "create", "complete", 66)]
    assert all(j.klaviyo_job_id and j.read_back_at for j in jobs)
    assert not klaviyo.catalog.unread_jobs()
    known = CatalogStore(state_engine).known(CatalogKind.ITEM)
    assert len(known) == 250 and all(r.created_by_us and r.in_klaviyo and r.digest
                                     and r.state is SyncState.SYNCED for r in known.values())


def test_a_job_lost_mid_post_is_resolved_by_asking_klaviyo(
        parts: tuple[Settings, sa.Engine, Sender], state_engine: sa.Engine,
        klaviyo: KlaviyoStandIn) -> None:
    store = CatalogStore(state_engine)
    # As a kill leaves it: two jobs recorded, one of which reached Klaviyo.
    klaviyo.catalog.add("item", "1", {"title": "Product 1", "url": "u", "description": "d"})
    klaviyo.catalog.add("category", "Coffee", {"name": "Coffee"})
    klaviyo.catalog.add("category", "Snacks", {"name": "Snacks"})
    klaviyo.catalog.add("category", "Tea", {"name": "Tea"})
    store.prepare(CatalogKind.CATEGORY, CatalogAction.CREATE,
                  [("Coffee", "d1"), ("Snacks", "d2"), ("Tea", "d3")], utcnow())
    store.prepare(CatalogKind.ITEM, CatalogAction.CREATE, [("1", "stale"), ("2", "stale")],
                  utcnow())
    report = sync_of(parts, state_engine).run_once(full=True)
    assert report.recovered_jobs == 2 and report.failed == 0
    # Item 1 landed (it is ours now, and its stale digest makes it an update); item 2 is
    # created anew; nothing is created twice.
    assert report.sent["item create"] == 249 and report.sent["item update"] == 1
    assert "category create" not in report.sent and report.sent["category update"] == 3
    assert max(klaviyo.catalog.counts("create", "item").values()) == 1
    assert store.known(CatalogKind.ITEM)["1"].created_by_us
    with state_engine.connect() as conn:
        statuses = conn.execute(sa.select(catalog_jobs.c.status)).scalars().all()
    assert statuses.count(JobStatus.ABANDONED.value) == 2


def test_a_request_refused_whole_marks_its_objects_with_the_detail(
        parts: tuple[Settings, sa.Engine, Sender], state_engine: sa.Engine,
        klaviyo: KlaviyoStandIn) -> None:
    klaviyo.faults.fail_next(1, status=400)  # the first job, the categories, is refused
    report = sync_of(parts, state_engine).run_once(full=True)
    failed = CatalogStore(state_engine).failed()
    categories = [r for r in failed if r.kind is CatalogKind.CATEGORY]
    assert len(categories) == 3 and all("Injected server error" in (r.last_error or "")
                                        for r in categories)
    # Items name missing categories: Klaviyo (the stand-in) refuses them one by one.
    assert report.failed == len(failed) and report.failed > 3
    again = sync_of(parts, state_engine).run_once(full=True)
    assert again.failed == 0 and not CatalogStore(state_engine).failed()


def test_never_more_jobs_in_progress_than_allowed(parts: tuple[Settings, sa.Engine, Sender],
                                                  state_engine: sa.Engine,
                                                  klaviyo: KlaviyoStandIn) -> None:
    klaviyo.catalog.max_in_progress = 2
    report = sync_of(parts, state_engine, batch_size=10, max_jobs_in_progress=2).run_once(
        full=True)
    assert report.requests["item create"] == 25 and report.failed == 0
    assert klaviyo.catalog.refused_posts == 0


def test_the_standin_checks_what_it_is_sent(klaviyo: KlaviyoStandIn) -> None:
    url = f"{klaviyo.base_url}/api/catalog-item-bulk-create-jobs"
    no_title = {"data": {"type": "catalog-item-bulk-create-job", "attributes": {"items": {
        "data": [{"type": "catalog-item", "attributes": {
            "external_id": "1", "description": "d", "url": "https://x/1"}}]}}}}
    answer = requests.post(url, json=no_title, headers=HEADERS, timeout=10)
    assert answer.status_code == 400
    error = answer.json()["errors"][0]
    assert error["source"]["pointer"] == "/data/attributes/items/data/0/attributes/title"
    too_many = {"data": {"type": "catalog-item-bulk-delete-job", "attributes": {"items": {
        "data": [{"type": "catalog-item", "id": f"$custom:::$default:::{n}"}
                 for n in range(101)]}}}}
    answer = requests.post(f"{klaviyo.base_url}/api/catalog-item-bulk-delete-jobs",
                           json=too_many, headers=HEADERS, timeout=10)
    assert answer.status_code == 400 and "at most 100" in answer.json()["errors"][0]["detail"]
    missing = {"data": {"type": "catalog-item-bulk-delete-job", "attributes": {"items": {
        "data": [{"type": "catalog-item", "id": "$custom:::$default:::nope"}]}}}}
    job = requests.post(f"{klaviyo.base_url}/api/catalog-item-bulk-delete-jobs",
                        json=missing, headers=HEADERS, timeout=10).json()["data"]
    read = requests.get(f"{klaviyo.base_url}/api/catalog-item-bulk-delete-jobs/{job['id']}",
                        headers=HEADERS, timeout=10).json()["data"]["attributes"]
    assert read["status"] == "complete" and read["failed_count"] == 1
    assert read["errors"][0]["source"]["pointer"] == "/data/attributes/items/data/0"
    for n in range(150):
        klaviyo.catalog.add("item", str(n), {"title": "t"})
    listed = requests.get(f"{klaviyo.base_url}/api/catalog-items", headers=HEADERS,
                          params={"filter": 'any(ids,["$custom:::$default:::5",'
                                            '"$custom:::$default:::nope"])'}, timeout=10)
    assert [r["id"] for r in listed.json()["data"]] == ["$custom:::$default:::5"]
    page = requests.get(f"{klaviyo.base_url}/api/catalog-items", headers=HEADERS,
                        timeout=10).json()
    assert len(page["data"]) == 100 and page["links"]["next"]
    rest = requests.get(page["links"]["next"], headers=HEADERS, timeout=10).json()
    assert len(rest["data"]) == 50 and rest["links"]["next"] is None


def test_the_changes_pass_picks_up_a_variant_edited_on_its_own(
        parts: tuple[Settings, sa.Engine, Sender], state_engine: sa.Engine,
        klaviyo: KlaviyoStandIn) -> None:
    sync = sync_of(parts, state_engine)
    sync.run_once(full=True)
    settings, _business, _sender = parts
    _products, variants = catalog_tables(CatalogSettings())
    writer = sa.create_engine(settings.business.url)
    with writer.begin() as conn:
        conn.execute(variants.update().where(variants.c.id == "3-S")
                     .values(inventory=0, updated_at=T0 + timedelta(days=1)))
    writer.dispose()
    report = sync.run_once()
    assert not report.full and report.sent == {"variant update": 1}
    assert klaviyo.catalog.held("variant")["3-S"]["inventory_quantity"] == 0


def test_without_a_products_table_the_pass_says_so_once(
        tmp_path: Path, state_engine: sa.Engine, klaviyo: KlaviyoStandIn) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    writer = sa.create_engine(url)
    with writer.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    writer.dispose()
    settings = Settings(business=BusinessSettings(url=url),
                        sender=SenderSettings(kind="dry-run",
                                              outbox=str(tmp_path / "outbox.jsonl")))
    app = App(settings, state_engine=state_engine)
    business, sender = app.business_engine, app.sender
    try:
        sync = build_catalog_sync(settings, state_engine, business, sender)
        assert sync is not None
        with capture_logs() as logs:
            first, second = sync.run_once(), sync.run_once(full=True)
        writer = sa.create_engine(url)
        generate_catalog(writer, CatalogSettings(), 5, ["Tea"], T0)
        writer.dispose()
        third = sync.run_once()  # the table appeared: the pass is on, without a restart
    finally:
        app.close()
    assert first.off == second.off == "the business database has no products table"
    assert [e["event"] for e in logs].count("catalog_pass_off") == 1
    assert third.off is None and third.sent["item create"] == 5
    assert build_catalog_sync(settings, state_engine, None, sender) is None


def test_a_job_still_processing_is_polled_then_left_for_the_next_pass(
        parts: tuple[Settings, sa.Engine, Sender], state_engine: sa.Engine,
        klaviyo: KlaviyoStandIn) -> None:
    klaviyo.catalog.processing_reads = 2
    patient = sync_of(parts, state_engine).run_once(full=True)  # polls until complete
    assert patient.unfinished_jobs == 0 and not klaviyo.catalog.unread_jobs()
    settings, _business, _sender = parts
    writer = sa.create_engine(settings.business.url)
    products, _variants = catalog_tables(CatalogSettings())
    with writer.begin() as conn:
        conn.execute(products.update().where(products.c.id == 1)
                     .values(name="Renamed", updated_at=T0 + timedelta(days=1)))
    writer.dispose()
    klaviyo.catalog.processing_reads = 20  # longer than the hasty pass below waits
    hasty = sync_of(parts, state_engine, job_wait_s=0.01, job_poll_s=0.01).run_once()
    assert hasty.sent == {"item update": 1} and hasty.unfinished_jobs == 1
    assert CatalogStore(state_engine).known(CatalogKind.ITEM)["1"].state is SyncState.IN_FLIGHT
    # The next pass reads that job back first; the rename is not sent a second time.
    after = sync_of(parts, state_engine).run_once()
    assert after.recovered_jobs == 1 and after.sent == {}
    assert klaviyo.catalog.counts("update", "item") == Counter({"1": 1})
    assert CatalogStore(state_engine).known(CatalogKind.ITEM)["1"].state is SyncState.SYNCED
