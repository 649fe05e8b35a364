"""Products (and their variants) of the business system, read-only, for the catalog pass.

Table and column names come from ``[catalog]``; a URL or image column the table lacks is
"" and ``url_template`` / ``image_url_template`` build the value from the product id.
Values are normalised here (prices as floats, flags as bools, ids as text) so that a
product digests the same on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.business.orders import parse_raw_time, shift_raw_time
from klaviyo_sync.config import CatalogSettings
from klaviyo_sync.exceptions import BusinessDataError

#: Ids per IN query (under every backend's bound-parameter limit).
_IN_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    sku: str | None
    name: str
    description: str
    url: str
    image_url: str | None
    price: float | None
    currency: str | None
    category: str | None
    active: bool
    inventory: int | None
    raw_updated_at: Any  # as the driver returned it: the changes pass's watermark


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    product_id: str
    sku: str | None
    name: str
    price: float | None
    inventory: int | None
    active: bool


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _count(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "t", "yes", "y")
    return bool(value) if value is not None else True


class ProductReader:
    """Reads the products table (and the variants table, when there is one)."""

    def __init__(self, engine: Engine, settings: CatalogSettings) -> None:
        self.engine = engine
        self.settings = settings
        c = settings.columns
        self._product_cols = [c.product_id, c.product_sku, c.product_name,
                              c.product_description, c.product_url, c.product_image_url,
                              c.product_price, c.product_currency, c.product_category,
                              c.product_active, c.product_inventory, c.product_updated_at]
        present = [n for n in self._product_cols if n]
        self._products = sa.table(settings.products_table, *(sa.column(n) for n in present))
        self._variant_cols = [c.variant_id, c.variant_product_id, c.variant_sku, c.variant_name,
                              c.variant_price, c.variant_inventory, c.variant_active]
        self._variants = sa.table(settings.variants_table,
                                  *(sa.column(n) for n in self._variant_cols))
        self._tables: set[str] | None = None

    # --- what the database has -----------------------------------------------------------

    def _table_names(self) -> set[str]:
        if self._tables is None:
            try:
                with self.engine.connect() as conn:
                    self._tables = set(sa.inspect(conn).get_table_names())
            except sa.exc.SQLAlchemyError as exc:
                raise self._error("list the tables of", exc) from exc
        return self._tables

    def refresh(self) -> None:
        """Look at the database's tables again (a products table may appear later)."""
        self._tables = None

    def has_products(self) -> bool:
        return self.settings.products_table in self._table_names()

    def has_variants(self) -> bool:
        return self.settings.variants_table in self._table_names()

    # --- reads -----------------------------------------------------------------------------

    def read_products(self, since: Any = None) -> list[Product]:
        """Every product, or those with updated_at >= ``since`` (a raw driver value)."""
        t = self._products.c
        stmt = sa.select(*(t[n] if n else sa.null() for n in self._product_cols))
        if since is not None:
            stmt = stmt.where(t[self.settings.columns.product_updated_at] >= since)
        stmt = stmt.order_by(t[self.settings.columns.product_id])
        return [self._product(row) for row in self._fetch(stmt, self.settings.products_table)]

    def read_variants(self, product_ids: Iterable[str] | None = None) -> list[Variant]:
        """Variants of the given products (all of them when None); [] without the table."""
        if not self.has_variants():
            return []
        t = self._variants.c
        stmt = sa.select(*(t[n] for n in self._variant_cols)).order_by(
            t[self.settings.columns.variant_id])
        if product_ids is None:
            rows = self._fetch(stmt, self.settings.variants_table)
        else:
            ids = sorted(set(product_ids))
            rows = []
            for start in range(0, len(ids), _IN_CHUNK):
                rows += self._fetch(stmt.where(t[self.settings.columns.variant_product_id]
                                               .in_(_typed(ids[start:start + _IN_CHUNK]))),
                                    self.settings.variants_table)
        return [Variant(str(r[0]), str(r[1]), _text(r[2]), _text(r[3]) or str(r[0]),
                        _number(r[4]), _count(r[5]), _flag(r[6])) for r in rows]

    def products_of_changed_variants(self, since: Any) -> set[str]:
        """Ids of products with a variant whose updated_at >= ``since``."""
        if not self.has_variants():
            return set()
        c = self.settings.columns
        t = sa.table(self.settings.variants_table, sa.column(c.variant_product_id),
                     sa.column(c.variant_updated_at)).c
        stmt = sa.select(t[c.variant_product_id]).where(t[c.variant_updated_at] >= since)
        return {str(r[0]) for r in self._fetch(stmt.distinct(), self.settings.variants_table)}

    def lookup(self, product_ids: Iterable[str]) -> dict[str, Product]:
        """Products by id (for the order events' links); missing ids are left out."""
        ids = sorted({i for i in product_ids if i})
        if not ids or not self.has_products():
            return {}
        t = self._products.c
        base = sa.select(*(t[n] if n else sa.null() for n in self._product_cols))
        found: dict[str, Product] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            stmt = base.where(t[self.settings.columns.product_id]
                              .in_(_typed(ids[start:start + _IN_CHUNK])))
            for row in self._fetch(stmt, self.settings.products_table):
                product = self._product(row)
                found[product.id] = product
        return found

    def _fetch(self, stmt: sa.Select[Any], table: str) -> Sequence[Any]:
        try:
            with self.engine.connect() as conn:
                return conn.execute(stmt).fetchall()
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(f"read {table} from", exc) from exc

    def _product(self, row: Sequence[Any]) -> Product:
        (pid, sku, name, description, url, image, price, currency, category, active,
         inventory, updated) = row
        pid = str(pid)
        name_text = _text(name) or pid
        url_text = _text(url) or self._from_template(self.settings.url_template, pid)
        if not url_text:
            raise BusinessDataError(
                f"{self.settings.products_table}: product {pid} has no URL and "
                "catalog.url_template is empty")
        return Product(
            id=pid, sku=_text(sku), name=name_text, description=_text(description) or name_text,
            url=url_text,
            image_url=_text(image) or self._from_template(self.settings.image_url_template, pid),
            price=_number(price), currency=(_text(currency) or "").upper() or None,
            category=_text(category), active=_flag(active), inventory=_count(inventory),
            raw_updated_at=updated)

    @staticmethod
    def _from_template(template: str, pid: str) -> str | None:
        return template.replace("{id}", pid) if template else None

    def _error(self, what: str, exc: Exception) -> BusinessDataError:
        first = str(getattr(exc, "orig", exc)).splitlines()[0]
        return BusinessDataError(f"cannot {what} the business database: {first}")


def _typed(ids: list[str]) -> list[Any]:
    # Integer ids compare as integers (PostgreSQL refuses integer = text).
    return [int(i) for i in ids] if all(i.lstrip("-").isdigit() for i in ids) else ids


def later(watermark: Any, candidate: Any) -> Any:
    """The later of two raw updated_at values (None counts as earliest)."""
    if candidate is None:
        return watermark
    if watermark is None or parse_raw_time(candidate) > parse_raw_time(watermark):
        return candidate
    return watermark


__all__ = ["Product", "ProductReader", "Variant", "later", "shift_raw_time"]
