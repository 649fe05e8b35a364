"""The products reader on every business backend: the documented schema, settings' names,
URL templates, variants, and values that digest the same everywhere."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from klaviyo_sync.business.db import open_business
from klaviyo_sync.business.products import ProductReader
from klaviyo_sync.business.sample_catalog import catalog_tables, generate_catalog
from klaviyo_sync.catalog.records import wanted_catalog
from klaviyo_sync.config import CatalogSettings, ProductColumns
from klaviyo_sync.exceptions import BusinessDataError
from klaviyo_sync.senders.catalog import CatalogKind

T0 = datetime(2026, 3, 1, 9, 0)
#: The item digest of product 3 as built by hand (see test_catalog_records): reading it
#: from any backend must give the same.
ITEM_3_DIGEST = "957828d0f700519ae7228165cd4ad4320ec179ce73bfb752314d5339d4102be5"

Readers = Callable[..., ProductReader]


@pytest.fixture
def readers(business_url: str) -> Iterator[Readers]:
    """ProductReader factory on the business database (read-only), closed afterwards."""
    engines: list[sa.Engine] = []

    def make(settings: CatalogSettings | None = None) -> ProductReader:
        engines.append(open_business(business_url))
        return ProductReader(engines[-1], settings or CatalogSettings())

    yield make
    for engine in engines:
        engine.dispose()


def test_reads_products_and_variants_the_same_on_every_backend(business_url: str,
                                                               readers: Readers) -> None:
    writer = sa.create_engine(business_url)
    summary = generate_catalog(writer, CatalogSettings(), 30, ["Tea", "Coffee"], T0)
    reader = readers()
    assert reader.has_products() and reader.has_variants()
    products = reader.read_products()
    assert [p.id for p in products] == [str(n) for n in range(1, 31)]
    three = products[2]
    assert three.name == "Product 3" and three.sku == "SKU-00003"
    assert three.price == 13.1 and isinstance(three.price, float)
    assert three.active is True and three.inventory == 3 and three.category == "Coffee"
    assert three.url == "https://shop.example.com/item/3"
    variants = reader.read_variants(["3"])
    assert [(v.id, v.product_id, v.price) for v in variants] == [("3-L", "3", 14.1),
                                                                ("3-S", "3", 13.1)]
    assert len(reader.read_variants()) == summary.variants
    wanted = wanted_catalog([three], variants)
    assert set(wanted[CatalogKind.VARIANT]) == {"3-S", "3-L"}
    assert wanted[CatalogKind.ITEM]["3"].digest == ITEM_3_DIGEST
    assert set(reader.lookup(["3", "999"])) == {"3"}
    writer.dispose()


def test_changed_since_reads_only_rows_whose_updated_at_moved(business_url: str,
                                                              readers: Readers) -> None:
    writer = sa.create_engine(business_url)
    generate_catalog(writer, CatalogSettings(), 20, ["Tea"], T0)
    products, _ = catalog_tables(CatalogSettings())
    with writer.begin() as conn:
        conn.execute(products.update().where(products.c.id.in_([4, 7]))
                     .values(active=False, updated_at=T0 + timedelta(days=2)))
    reader = readers()
    changed = reader.read_products(since=T0 + timedelta(days=1))
    assert [(p.id, p.active) for p in changed] == [("4", False), ("7", False)]
    writer.dispose()


def test_url_template_and_renamed_columns(business_url: str, readers: Readers) -> None:
    columns = dataclasses.replace(ProductColumns(), product_id="pid", product_name="title",
                                  product_url="", product_image_url="")
    settings = CatalogSettings(products_table="shop_products", columns=columns,
                               url_template="https://boxes.example/p/{id}",
                               image_url_template="https://cdn.example/{id}.png")
    writer = sa.create_engine(business_url)
    generate_catalog(writer, settings, 3, ["Tea"], T0, with_variants=False)
    reader = readers(settings)
    assert not reader.has_variants() and reader.read_variants() == []
    first = reader.read_products()[0]
    assert first.url == "https://boxes.example/p/1"
    assert first.image_url == "https://cdn.example/1.png"
    assert first.name == "Product 1"
    wanted = wanted_catalog(reader.read_products(), None)
    # Without a variants table each product is its own variant.
    assert sorted(wanted[CatalogKind.VARIANT]) == ["1", "2", "3"]
    writer.dispose()


def test_without_a_products_table_the_reader_says_so(business_url: str,
                                                    readers: Readers) -> None:
    writer = sa.create_engine(business_url)
    with writer.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    writer.dispose()
    reader = readers()
    assert not reader.has_products()
    assert reader.lookup(["1"]) == {}


def test_a_bad_column_name_is_a_clear_error(business_url: str, readers: Readers) -> None:
    writer = sa.create_engine(business_url)
    generate_catalog(writer, CatalogSettings(), 2, ["Tea"], T0)
    columns = dataclasses.replace(ProductColumns(), product_sku="no_such_column")
    reader = readers(CatalogSettings(columns=columns))
    with pytest.raises(BusinessDataError, match="cannot read products from the business"):
        reader.read_products()
    writer.dispose()
