"""A writable business database for tests: the documented schema plus helpers to change it.

The code under test reads it read-only through ``open_business``; the test writes through
its own engine, as the business system would.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from klaviyo_sync.business.sample_data import create_schema, tables
from klaviyo_sync.config import BusinessSettings, OrderSettings, Settings, SuppressionSettings


class Shop:
    def __init__(self, url: str, settings: BusinessSettings | None = None) -> None:
        self.url = url
        self.settings = settings or BusinessSettings(url=url)
        self.engine = sa.create_engine(url)
        create_schema(self.engine, self.settings)
        self.customers, self.orders, self.items = tables(self.settings)

    def add_customer(self, cid: int, status: str = "Active", opt_in: bool = True,
                     email: str | None = None, box: str | None = "Classic",
                     schedule: str | None = "weekly", first: str = "Ada",
                     last: str = "Lovelace") -> None:
        with self.engine.begin() as conn:
            conn.execute(self.customers.insert().values(
                id=cid, email=email or f"c{cid}@example.com", first_name=first,
                last_name=last, status=status, schedule=schedule, box=box,
                signup_date=date(2024, 1, 1), email_opt_in=opt_in,
                updated_at=datetime(2024, 1, 1)))

    def add_order(self, oid: int, status: str, created: datetime,
                  updated: datetime | None = None, customer: int | None = 1,
                  items: int = 2, total: float | None = None, currency: str | None = "USD"
                  ) -> None:
        lines = [{"order_id": oid, "product_id": 100 + n, "sku": f"SKU-{100 + n}",
                  "name": f"Product {100 + n}", "quantity": n + 1, "price": 9.99,
                  "category": "Coffee" if n % 2 == 0 else "Tea"} for n in range(items)]
        if total is None:
            total = round(sum(line["price"] * line["quantity"] for line in lines), 2)
        with self.engine.begin() as conn:
            conn.execute(self.orders.insert().values(
                id=oid, customer_id=customer, status=status, total=total, currency=currency,
                created_at=created, updated_at=updated or created))
            if lines:
                conn.execute(self.items.insert(), lines)

    def set_status(self, oid: int, status: str, updated: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.orders.update().where(self.orders.c.id == oid)
                         .values(status=status, updated_at=updated))

    def settings_with(self, **sections: Any) -> Settings:
        orders = sections.pop("orders", OrderSettings(page_size=50))
        suppression = sections.pop("suppression", SuppressionSettings())
        return Settings(business=self.settings, orders=orders, suppression=suppression,
                        **sections)

    def close(self) -> None:
        self.engine.dispose()
