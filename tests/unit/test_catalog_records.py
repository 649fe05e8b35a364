"""What the catalog should hold, what a pass plans to send, and the job documents."""

from __future__ import annotations

from datetime import datetime

import pytest

from klaviyo_sync.business.order_events import OrderEventBuilder, order_properties
from klaviyo_sync.business.orders import Order, OrderItem
from klaviyo_sync.business.products import Product, Variant
from klaviyo_sync.catalog.records import category_external_id, item, wanted_catalog
from klaviyo_sync.catalog.store import SyncRow, SyncState
from klaviyo_sync.catalog.sync import plan_kind
from klaviyo_sync.senders.catalog import (
    CatalogAction,
    CatalogKind,
    ItemError,
    JobAnswer,
    job_body,
    job_path,
)
from klaviyo_sync.senders.pacing import PUBLISHED

T0 = datetime(2026, 3, 1)


def product(pid: str = "3", **changes: object) -> Product:
    fields: dict[str, object] = dict(
        id=pid, sku=f"SKU-{int(pid):05d}", name=f"Product {pid}", description="Box add-on number 3",
        url=f"https://shop.example.com/item/{pid}",
        image_url=f"https://shop.example.com/img/{pid}.jpg", price=13.1, currency="USD",
        category="Coffee", active=True, inventory=3, raw_updated_at=None)
    fields.update(changes)
    return Product(**fields)  # type: ignore[arg-type]


def row(external_id: str, digest: str | None, in_klaviyo: bool = True,
        created_by_us: bool = True) -> SyncRow:
    return SyncRow(CatalogKind.ITEM, external_id, digest, in_klaviyo, created_by_us,
                   SyncState.SYNCED, None, None, T0)


def test_an_item_names_its_category_and_digests_what_it_sends() -> None:
    wanted = item(product())
    assert wanted.create["attributes"]["external_id"] == "3"
    assert wanted.create["attributes"]["integration_type"] == "$custom"
    assert wanted.update["id"] == "$custom:::$default:::3"
    assert wanted.update["relationships"]["categories"]["data"] == [
        {"type": "catalog-category", "id": "$custom:::$default:::Coffee"}]
    assert wanted.digest == item(product()).digest
    assert item(product(name="Renamed")).digest != wanted.digest
    # The reader normalises values, so the digest is the one every backend gives.
    assert wanted.digest == "957828d0f700519ae7228165cd4ad4320ec179ce73bfb752314d5339d4102be5"


def test_inactive_products_and_variants_are_not_wanted() -> None:
    products = [product("1"), product("2", active=False, category="Tea")]
    variants = [Variant("1-S", "1", None, "small", 1.0, 2, True),
                Variant("1-L", "1", "L", "large", 2.0, 0, False),
                Variant("2-S", "2", "S", "small", 1.0, 1, True)]
    wanted = wanted_catalog(products, variants)
    assert set(wanted[CatalogKind.ITEM]) == {"1"}
    assert set(wanted[CatalogKind.VARIANT]) == {"1-S"}
    assert set(wanted[CatalogKind.CATEGORY]) == {"Coffee"}  # Tea has no active product
    small = wanted[CatalogKind.VARIANT]["1-S"].create
    assert small["attributes"]["sku"] == "1-S"  # a variant without its own SKU: its id
    assert small["relationships"]["item"]["data"]["id"] == "$custom:::$default:::1"


def test_category_ids_are_plain() -> None:
    assert category_external_id("Snacks & Treats") == "Snacks-Treats"
    assert category_external_id("  ") == "uncategorised"


def test_plan_creates_updates_and_deletes_only_what_we_created() -> None:
    wanted = {w.external_id: w for w in (item(product("1")), item(product("2")),
                                         item(product("3")))}
    known = {"1": row("1", wanted["1"].digest),  # unchanged
             "2": row("2", "old"),  # changed
             "4": row("4", "x"),  # ours, gone from the products: delete
             "5": row("5", "x", created_by_us=False),  # someone else's: never
             "6": row("6", None, in_klaviyo=False)}  # deleted before: nothing to do
    plan = plan_kind(CatalogKind.ITEM, wanted, known, None)
    assert [w.external_id for w in plan.creates] == ["3"]
    assert [w.external_id for w in plan.updates] == ["2"]
    assert plan.deletes == ["4"]
    # A changes pass deletes only within what it read.
    assert plan_kind(CatalogKind.ITEM, wanted, known, {"1", "2", "3"}).deletes == []
    # An object in a job Klaviyo is still processing waits for that job's read-back.
    busy = {"3": SyncRow(CatalogKind.ITEM, "3", None, False, False, SyncState.IN_FLIGHT, 7,
                         None, T0),
            "4": SyncRow(CatalogKind.ITEM, "4", "x", True, True, SyncState.IN_FLIGHT, 8,
                         None, T0)}
    idle = plan_kind(CatalogKind.ITEM, {"3": wanted["3"]}, busy, None)
    assert not idle.creates and not idle.deletes


def test_job_documents_and_paths() -> None:
    body = job_body(CatalogKind.CATEGORY, CatalogAction.UPDATE, [{"type": "catalog-category"}])
    assert body["data"]["type"] == "catalog-category-bulk-update-job"
    assert "categories" in body["data"]["attributes"]
    assert job_path(CatalogKind.VARIANT, CatalogAction.DELETE) == \
        "/api/catalog-variant-bulk-delete-jobs"
    with pytest.raises(ValueError, match="1 to 100"):
        job_body(CatalogKind.ITEM, CatalogAction.CREATE, [{}] * 101)
    for kind in CatalogKind:
        for action in CatalogAction:
            assert f"POST {job_path(kind, action)}" in PUBLISHED
            assert f"GET {job_path(kind, action)}/{{job_id}}" in PUBLISHED


def test_job_errors_point_at_their_resource() -> None:
    answer = JobAnswer.from_document({"data": {"id": "J1", "attributes": {
        "status": "complete", "total_count": 3, "completed_count": 2, "failed_count": 1,
        "errors": [{"code": "invalid", "detail": "bad price",
                    "source": {"pointer": "/data/attributes/items/data/2"}},
                   {"code": "invalid", "detail": "no pointer"}]}}})
    assert answer.finished and answer.failed == 1
    assert answer.errors[0] == ItemError(2, "invalid", "bad price")
    assert answer.errors[1].index is None


def test_order_lines_of_known_products_link_to_the_catalog() -> None:
    lines = (OrderItem("3", "SKU-3", "Beans", 1, 13.1, "Coffee"),
             OrderItem("9", None, None, 1, 1.0, None),
             OrderItem("77", "X", "Unknown", 1, 1.0, None))
    order = Order("42", "1", "placed", 15.1, "USD", T0, T0, lines, 42, T0)
    links = {"3": product("3"), "9": product("9")}
    props = order_properties(order, links)
    first, second, third = props["Items"]
    assert first["CatalogItemID"] == "$custom:::$default:::3"
    assert first["ProductURL"] == "https://shop.example.com/item/3"
    assert first["ImageURL"] == "https://shop.example.com/img/3.jpg"
    assert first["ProductName"] == "Beans"  # the line's own name wins
    assert second["ProductName"] == "Product 9" and second["SKU"] == "SKU-00009"
    assert "CatalogItemID" not in third  # not in the catalog: nothing made up
    events = OrderEventBuilder("USD", T0).ordered_products(order, "a@b.c", links)
    assert events[0].properties["CatalogItemID"] == "$custom:::$default:::3"
    assert "ProductURL" not in events[2].properties
