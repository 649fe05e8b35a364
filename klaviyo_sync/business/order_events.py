"""Queue events built from orders, following Klaviyo's documented e-commerce conventions.

Klaviyo's guide names the metrics (Placed Order, Ordered Product, Fulfilled Order,
Cancelled Order, Refunded Order) and their properties (OrderId, Items with ProductID, SKU,
ProductName, Quantity, ItemPrice, RowTotal, Categories; ItemNames; Categories). The money
goes in the event's ``value``/``value_currency`` fields, not the legacy ``$value``
property. Every order-level event carries the same properties as Placed Order, so a
cancellation or refund flow can show what was in the order.

unique ids are deterministic per order and event (``order:<id>:placed``,
``order:<id>:item:<n>``, ...): the queue and Klaviyo both drop a repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from klaviyo_sync.business.orders import Order, OrderItem, OrderState
from klaviyo_sync.queue.models import NewEvent

PLACED_ORDER = "Placed Order"
ORDERED_PRODUCT = "Ordered Product"
METRICS = {
    OrderState.PLACED: PLACED_ORDER,
    OrderState.CANCELLED: "Cancelled Order",
    OrderState.FULFILLED: "Fulfilled Order",
    OrderState.REFUNDED: "Refunded Order",
}
SOURCE = "order"
#: Klaviyo's custom catalog id prefix: a product in an event names its catalog item.
CATALOG_ID_PREFIX = "$custom:::$default:::"


class CatalogLink(Protocol):
    """What an event needs of a product to point at its catalog item."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def sku(self) -> str | None: ...
    @property
    def url(self) -> str: ...
    @property
    def image_url(self) -> str | None: ...


Links = Mapping[str, CatalogLink]


def link_properties(item: OrderItem, links: Links | None) -> dict[str, Any]:
    """The properties Klaviyo's product blocks read, for a line whose product is known:
    the catalog item id, URL and image (and name/SKU when the line lacks them)."""
    product = links.get(item.product_id) if links and item.product_id else None
    if product is None:
        return {}
    found: dict[str, Any] = {"CatalogItemID": CATALOG_ID_PREFIX + product.id,
                             "ProductURL": product.url}
    if product.image_url:
        found["ImageURL"] = product.image_url
    if not item.name:
        found["ProductName"] = product.name
    if not item.sku and product.sku:
        found["SKU"] = product.sku
    return found


def unique_id(order_id: str, state: OrderState) -> str:
    return f"order:{order_id}:{state.value}"


def item_unique_id(order_id: str, n: int) -> str:
    """n is 1-based, the line's place in the order's stable item order."""
    return f"order:{order_id}:item:{n}"


def _money(amount: float) -> float:
    # Drops binary noise (9.99 * 3 = 29.970000000000002) whatever the currency's decimals.
    return round(amount, 6)


def order_properties(order: Order, links: Links | None = None) -> dict[str, Any]:
    """The properties every order-level event of ``order`` carries; ``links`` (products by
    id) adds each known product's catalog id, URL and image to its line."""
    items = []
    names = []
    categories: set[str] = set()
    quantity = 0
    for item in order.items:
        items.append({
            "ProductID": item.product_id, "SKU": item.sku, "ProductName": item.name,
            "Quantity": item.quantity, "ItemPrice": item.price,
            "RowTotal": _money(item.price * item.quantity),
            "Categories": [item.category] if item.category else [],
            **link_properties(item, links),
        })
        if item.name:
            names.append(item.name)
        if item.category:
            categories.add(item.category)
        quantity += item.quantity
    return {"OrderId": order.id, "Items": items, "ItemNames": names,
            "Categories": sorted(categories), "ItemCount": quantity}


class OrderEventBuilder:
    """Builds the NewEvents of one order; ``backfill_before`` marks historical ones."""

    def __init__(self, default_currency: str, backfill_before: datetime) -> None:
        self.default_currency = default_currency
        self.backfill_before = backfill_before

    def order_event(self, order: Order, state: OrderState, occurred_at: datetime,
                    properties: dict[str, Any], email: str | None) -> NewEvent:
        """Placed/Cancelled/Fulfilled/Refunded Order at ``occurred_at`` (naive UTC)."""
        return NewEvent(
            unique_id=unique_id(order.id, state), metric=METRICS[state], source=SOURCE,
            occurred_at=occurred_at, properties=properties, customer_id=order.customer_id,
            email=email, value=order.total,
            value_currency=(order.currency or self.default_currency)
            if order.total is not None else None,
            backfill=occurred_at < self.backfill_before,
        )

    def ordered_products(self, order: Order, email: str | None,
                         links: Links | None = None) -> list[NewEvent]:
        """One Ordered Product per line, at the order's creation time; a product found in
        ``links`` carries its catalog id, URL and image."""
        at = order.created_at
        backfill = at < self.backfill_before
        currency = order.currency or self.default_currency
        return [
            NewEvent(
                unique_id=item_unique_id(order.id, n), metric=ORDERED_PRODUCT, source=SOURCE,
                occurred_at=at,
                properties={"OrderId": order.id, "ProductID": item.product_id, "SKU": item.sku,
                            "ProductName": item.name, "Quantity": item.quantity,
                            "ItemPrice": item.price,
                            "RowTotal": _money(item.price * item.quantity),
                            "Categories": [item.category] if item.category else [],
                            **link_properties(item, links)},
                customer_id=order.customer_id, email=email,
                value=_money(item.price * item.quantity), value_currency=currency,
                backfill=backfill,
            )
            for n, item in enumerate(order.items, start=1)
        ]
