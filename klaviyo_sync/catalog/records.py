"""What Klaviyo's catalog should hold, built from products: resources and their digests.

A product becomes a catalog item, its category a catalog category, each variant a catalog
variant (a product without a variants table is its own single variant). Inactive products
and variants are not wanted: they are deleted from Klaviyo if this program created them.
The digest of an object is the sha256 of its update resource: equal digests mean Klaviyo
already holds exactly this, so nothing is sent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from klaviyo_sync.business.products import Product, Variant
from klaviyo_sync.senders.catalog import CatalogKind, catalog_id

_CUSTOM = {"integration_type": "$custom", "catalog_type": "$default"}


@dataclass(frozen=True)
class Wanted:
    """One catalog object as it should be in Klaviyo."""

    kind: CatalogKind
    external_id: str
    create: dict[str, Any]
    update: dict[str, Any]
    digest: str


def category_external_id(name: str) -> str:
    """A category's external id: its name with runs of other characters as '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-") or "uncategorised"


def digest_of(resource: dict[str, Any]) -> str:
    text = json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _wanted(kind: CatalogKind, external_id: str, attributes: dict[str, Any],
            create_only: dict[str, Any], relationships: dict[str, Any] | None,
            create_relationships: dict[str, Any] | None = None) -> Wanted:
    update: dict[str, Any] = {"type": kind.resource_type, "id": catalog_id(external_id),
                              "attributes": attributes}
    if relationships:
        update["relationships"] = relationships
    create: dict[str, Any] = {"type": kind.resource_type,
                              "attributes": {"external_id": external_id, **create_only,
                                             **attributes}}
    rels = create_relationships if create_relationships is not None else relationships
    if rels:
        create["relationships"] = rels
    return Wanted(kind, external_id, create, update, digest_of(update))


def _drop_none(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def category(name: str) -> Wanted:
    return _wanted(CatalogKind.CATEGORY, category_external_id(name), {"name": name}, _CUSTOM,
                   None)


def item(product: Product) -> Wanted:
    attributes = _drop_none({
        "title": product.name, "description": product.description, "url": product.url,
        "price": product.price, "image_full_url": product.image_url,
        "images": [product.image_url] if product.image_url else None,
        "custom_metadata": _drop_none({"SKU": product.sku, "Currency": product.currency})
        or None,
        "published": True,
    })
    relationships = None
    if product.category:
        relationships = {"categories": {"data": [
            {"type": "catalog-category",
             "id": catalog_id(category_external_id(product.category))}]}}
    return _wanted(CatalogKind.ITEM, product.id, attributes, _CUSTOM, relationships)


def variant(v: Variant, product: Product) -> Wanted:
    attributes = _drop_none({
        "title": v.name, "description": product.description, "sku": v.sku or v.id,
        "inventory_quantity": v.inventory if v.inventory is not None else 0,
        "price": v.price if v.price is not None else (product.price or 0.0),
        "url": product.url, "image_full_url": product.image_url, "published": True,
    })
    item_link = {"item": {"data": {"type": "catalog-item", "id": catalog_id(product.id)}}}
    # The item a variant belongs to is given when it is created; updates cannot move it.
    return _wanted(CatalogKind.VARIANT, v.id, attributes, _CUSTOM, None, item_link)


def default_variant(product: Product) -> Variant:
    """A product without a variants table is sold as one variant of the same id."""
    return Variant(id=product.id, product_id=product.id, sku=product.sku, name=product.name,
                   price=product.price, inventory=product.inventory, active=product.active)


def wanted_catalog(products: Iterable[Product], variants: Sequence[Variant] | None
                   ) -> dict[CatalogKind, dict[str, Wanted]]:
    """Everything Klaviyo should hold for these products; ``variants`` None: no table."""
    out: dict[CatalogKind, dict[str, Wanted]] = {kind: {} for kind in CatalogKind}
    active: dict[str, Product] = {}
    for product in products:
        if not product.active:
            continue
        active[product.id] = product
        out[CatalogKind.ITEM][product.id] = item(product)
        if product.category:
            wanted = category(product.category)
            out[CatalogKind.CATEGORY].setdefault(wanted.external_id, wanted)
    sold = variants if variants is not None else [default_variant(p) for p in active.values()]
    for v in sold:
        parent = active.get(v.product_id)
        if v.active and parent is not None:
            out[CatalogKind.VARIANT][v.id] = variant(v, parent)
    return out


def delete_resource(kind: CatalogKind, external_id: str) -> dict[str, Any]:
    return {"type": kind.resource_type, "id": catalog_id(external_id)}
