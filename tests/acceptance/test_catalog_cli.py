"""Acceptance: `klaviyo-sync catalog` keeps the stand-in's catalog equal to a products table
of 3,000 products in 12 categories with variants, on every business database backend.
The stand-in runs in this process; the CLI is a real subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.business.sample_catalog import CatalogSummary, catalog_tables, generate_catalog
from klaviyo_sync.config import CatalogSettings
from tests.klaviyo_standin import KlaviyoStandIn

pytestmark = pytest.mark.slow

API_KEY = "pk_test_catalog"
PRODUCTS = 3000
CATEGORIES = [f"Category {n:02d}" for n in range(12)]
T0 = datetime(2026, 3, 1, 9, 0)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def standin() -> Iterator[KlaviyoStandIn]:
    s = KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=True)
    s.start()
    yield s
    s.stop()
    assert not s.internal_errors, s.internal_errors[0]


def write_settings(folder: Path, business_url: str, base_url: str, extra: str = "") -> Path:
    path = folder / "settings.toml"
    path.write_text(
        f'[state]\nurl = "sqlite:///{folder / "state.db"}"\n'
        f'[business]\nurl = "{business_url}"\n'
        f'[klaviyo]\nbase_url = "{base_url}"\ntimeout_s = 10.0\n'
        f'[sender]\noutbox = "{folder / "outbox.jsonl"}"\n'
        '[catalog]\njob_poll_s = 0.05\n' + extra +
        '[logging]\nlevel = "warning"\n', encoding="utf-8")
    return path


def cli_env() -> dict[str, str]:
    return dict(os.environ, KLAVIYO_API_KEY=API_KEY, PYTHONPATH=str(ROOT))


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "klaviyo_sync", "--config", str(config), "catalog", *args]


def catalog(config: Path, *args: str) -> dict:
    done = subprocess.run(command(config, *args, "--json"), capture_output=True, text=True,
                          env=cli_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def posts(standin: KlaviyoStandIn) -> Counter[str]:
    """Accepted catalog job POSTs per path."""
    return Counter(r.path.rstrip("/") for r in standin.requests
                   if r.method == "POST" and "catalog-" in r.path and r.status == 202)


def wanted_ids(summary: CatalogSummary, gone: frozenset[int] | set[int] = frozenset()
               ) -> tuple[set[str], set[str], set[str]]:
    items = {str(p) for p in range(1, summary.products + 1) if p not in gone}
    variants = {f"{p}-{size}" for p in summary.with_variants if p not in gone for size in "SL"}
    categories = {c.replace(" ", "-") for c in summary.categories}
    return items, variants, categories


def make_catalog(business_url: str) -> tuple[sa.Engine, CatalogSummary]:
    engine = sa.create_engine(business_url)
    return engine, generate_catalog(engine, CatalogSettings(), PRODUCTS, CATEGORIES, T0)


def test_catalog_all_syncs_only_what_changed_and_never_deletes_foreign_items(
        tmp_path: Path, business_url: str, standin: KlaviyoStandIn) -> None:
    engine, summary = make_catalog(business_url)
    standin.catalog.add("item", "FOREIGN-1", {"title": "Someone else's", "url": "https://x/1",
                                              "description": "not ours"})
    config = write_settings(tmp_path, business_url, standin.base_url)

    first = catalog(config, "--all")
    items, variants, categories = wanted_ids(summary)
    assert set(standin.catalog.held("item")) == items | {"FOREIGN-1"}
    assert set(standin.catalog.held("variant")) == variants
    assert set(standin.catalog.held("category")) == categories
    assert standin.catalog.held("item")["42"]["title"] == "Product 42"
    assert standin.catalog.relationships("item", "42")["categories"]["data"][0]["id"] == \
        "$custom:::$default:::Category-06"
    assert first["sent"] == {"category create": 12, "item create": PRODUCTS,
                             "variant create": len(variants)}
    sent = posts(standin)
    assert sent["/api/catalog-item-bulk-create-jobs"] <= math.ceil(PRODUCTS / 100)
    assert sent["/api/catalog-variant-bulk-create-jobs"] <= math.ceil(len(variants) / 100)
    assert sent["/api/catalog-category-bulk-create-jobs"] <= 1
    assert not standin.catalog.unread_jobs()

    second = catalog(config, "--all")
    assert second["sent"] == {} and posts(standin) == sent

    products, _variants = catalog_tables(CatalogSettings())
    plain = [p for p in range(1, PRODUCTS + 1) if p not in summary.with_variants]
    renamed, deactivated, deleted = plain[:10], plain[10:15], plain[15:18]
    later = T0 + timedelta(days=1)
    with engine.begin() as conn:
        for pid in renamed:
            conn.execute(products.update().where(products.c.id == pid)
                         .values(name=f"Renamed {pid}", updated_at=later))
        conn.execute(products.update().where(products.c.id.in_(deactivated))
                     .values(active=False, updated_at=later))
        conn.execute(products.delete().where(products.c.id.in_(deleted)))
    changes = catalog(config)  # the changes pass: what updated_at says moved
    assert changes["sent"] == {"item update": 10, "item delete": 5}
    full = catalog(config, "--all")  # the full pass also sees the rows that vanished
    assert full["sent"] == {"item delete": 3}
    assert standin.catalog.counts("update", "item") == Counter({str(p): 1 for p in renamed})
    assert set(standin.catalog.counts("delete", "item")) == {str(p) for p in
                                                             deactivated + deleted}
    assert standin.catalog.held("item")[str(renamed[0])]["title"] == f"Renamed {renamed[0]}"
    assert "FOREIGN-1" in standin.catalog.held("item")
    assert set(standin.catalog.held("item")) == \
        wanted_ids(summary, set(deactivated + deleted))[0] | {"FOREIGN-1"}
    assert catalog(config, "--all")["sent"] == {}
    engine.dispose()


def test_refused_items_are_listed_with_klaviyos_detail(tmp_path: Path,
                                                       standin: KlaviyoStandIn) -> None:
    url = f"sqlite:///{tmp_path / 'business.db'}"
    _engine, summary = make_catalog(url)
    refused = [p for p in range(1, 40) if p not in summary.with_variants][:4]
    for pid in refused:
        standin.catalog.refuse("item", str(pid), f"Item {pid}: the price is not accepted.")
    config = write_settings(tmp_path, url, standin.base_url)

    report = catalog(config, "--all")
    assert report["failed"] == 4
    assert set(standin.catalog.held("item")) == wanted_ids(summary)[0] - {str(p) for p in refused}
    listed = subprocess.run(command(config, "failed", "--json"), capture_output=True,
                            text=True, env=cli_env(), timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {(r["kind"], r["external_id"]) for r in rows} == {("item", str(p)) for p in refused}
    assert all(r["error"] == f"Item {r['external_id']}: the price is not accepted." for r in rows)
    text = subprocess.run(command(config, "failed"), capture_output=True, text=True,
                          env=cli_env(), timeout=60)
    assert "4 refused catalog object(s)" in text.stderr
    assert "the price is not accepted" in text.stdout
    # The rest count as synced: the next pass only tries the four again.
    again = catalog(config, "--all")
    assert again["sent"] == {"item create": 4} and again["failed"] == 4


def test_catalog_dry_run_writes_the_bodies_and_records_nothing(
        tmp_path: Path, standin: KlaviyoStandIn) -> None:
    url = f"sqlite:///{tmp_path / 'business.db'}"
    make_catalog(url)
    config = write_settings(tmp_path, url, standin.base_url)
    report = catalog(config, "--all", "--dry-run")
    assert report["dry_run"] and report["sent"]["item create"] == PRODUCTS
    lines = [json.loads(line) for line in (tmp_path / "outbox.jsonl").read_text().splitlines()]
    assert Counter(line["path"] for line in lines)["/api/catalog-item-bulk-create-jobs"] == 30
    first = next(line for line in lines if line["path"].startswith("/api/catalog-item"))
    resource = first["body"]["data"]["attributes"]["items"]["data"][0]
    assert resource["attributes"]["external_id"] == "1"
    assert not standin.requests  # nothing reached Klaviyo
    assert catalog(config, "--all")["sent"]["item create"] == PRODUCTS  # nothing recorded


def test_catalog_without_a_products_table_is_off_and_says_so(
        tmp_path: Path, standin: KlaviyoStandIn) -> None:
    url = f"sqlite:///{tmp_path / 'business.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    config = write_settings(tmp_path, url, standin.base_url)
    done = subprocess.run(command(config), capture_output=True, text=True, env=cli_env(),
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "the catalog pass is off: the business database has no products table" in done.stdout
    assert not standin.requests
