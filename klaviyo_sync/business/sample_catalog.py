"""A generated products catalog (products + product_variants) for tests, the bench and the demo.

The products match the lines :mod:`klaviyo_sync.business.sample_data` puts in orders
(``Product <id>``, ``SKU-<id>``, the same price and category for the same id), so the demo's
order events link to its catalog. Every third product has two variants (``<id>-S`` and
``<id>-L``); the others are sold as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.config import CatalogSettings

SIZES = ("S", "L")


@dataclass(frozen=True)
class CatalogSummary:
    products: int
    categories: tuple[str, ...]
    variants: int
    #: Product ids that have variants (the others have none in the variants table).
    with_variants: frozenset[int]


def catalog_tables(settings: CatalogSettings) -> tuple[sa.Table, sa.Table]:
    """The documented products and product_variants tables under the configured names."""
    c = settings.columns
    md = sa.MetaData()
    # A column set to "" in the settings is one the table does not have.
    optional: list[tuple[str, Any]] = [
                (c.product_description, sa.Text()), (c.product_url, sa.String(500)),
                (c.product_image_url, sa.String(500)), (c.product_currency, sa.String(3)),
                (c.product_category, sa.String(64)), (c.product_inventory, sa.Integer())]
    columns: list[sa.Column[Any]] = [
        sa.Column(c.product_id, sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(c.product_sku, sa.String(64)),
        sa.Column(c.product_name, sa.String(200)),
        sa.Column(c.product_price, sa.Numeric(12, 2)),
        sa.Column(c.product_active, sa.Boolean, nullable=False),
        sa.Column(c.product_updated_at, sa.DateTime, nullable=False),
        *(sa.Column(name, kind) for name, kind in optional if name),
    ]
    products = sa.Table(settings.products_table, md, *columns,
                        sa.Index(f"ix_{settings.products_table}_updated",
                                 c.product_updated_at))
    variants = sa.Table(
        settings.variants_table, md,
        sa.Column(c.variant_id, sa.String(64), primary_key=True),
        sa.Column(c.variant_product_id, sa.Integer, nullable=False),
        sa.Column(c.variant_sku, sa.String(64)),
        sa.Column(c.variant_name, sa.String(200)),
        sa.Column(c.variant_price, sa.Numeric(12, 2)),
        sa.Column(c.variant_inventory, sa.Integer),
        sa.Column(c.variant_active, sa.Boolean, nullable=False),
        sa.Column(c.variant_updated_at, sa.DateTime, nullable=False),
        sa.Index(f"ix_{settings.variants_table}_product", c.variant_product_id),
    )
    return products, variants


def price_of(pid: int) -> float:
    """The price sample_data gives product ``pid`` in orders."""
    return round(2 + (pid * 37 % 400) / 10, 2)


def generate_catalog(engine: Engine, settings: CatalogSettings, products: int,
                     categories: Sequence[str], updated_at: datetime,
                     shop_url: str = "https://shop.example.com",
                     with_variants: bool = True) -> CatalogSummary:
    """Create the tables and fill them: product ``pid`` is in ``categories[pid % n]``."""
    t_products, t_variants = catalog_tables(settings)
    t_products.create(engine)
    if with_variants:
        t_variants.create(engine)
    c = settings.columns
    rows: list[dict[str, Any]] = []
    variant_rows: list[dict[str, Any]] = []
    have: set[int] = set()
    for pid in range(1, products + 1):
        row = {c.product_id: pid, c.product_sku: f"SKU-{pid:05d}",
               c.product_name: f"Product {pid}",
               c.product_description: f"Box add-on number {pid}",
               c.product_url: f"{shop_url}/item/{pid}",
               c.product_image_url: f"{shop_url}/img/{pid}.jpg", c.product_price: price_of(pid),
               c.product_currency: "USD", c.product_category: categories[pid % len(categories)],
               c.product_active: True, c.product_inventory: pid % 50,
               c.product_updated_at: updated_at + timedelta(seconds=pid % 600)}
        rows.append({k: v for k, v in row.items() if k})
        if with_variants and pid % 3 == 0:
            have.add(pid)
            for n, size in enumerate(SIZES):
                variant_rows.append({
                    c.variant_id: f"{pid}-{size}", c.variant_product_id: pid,
                    c.variant_sku: f"SKU-{pid:05d}-{size}",
                    c.variant_name: f"Product {pid} ({size})",
                    c.variant_price: round(price_of(pid) + n, 2), c.variant_inventory: 10 + n,
                    c.variant_active: True, c.variant_updated_at: updated_at})
    with engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            conn.execute(t_products.insert(), rows[start:start + 1000])
        for start in range(0, len(variant_rows), 1000):
            conn.execute(t_variants.insert(), variant_rows[start:start + 1000])
    return CatalogSummary(products=products, categories=tuple(sorted(set(
        categories[pid % len(categories)] for pid in range(1, products + 1)))),
        variants=len(variant_rows), with_variants=frozenset(have))
