"""The business database the acceptance tests build by hand: the documented default
schema of customers, orders and order items, as SQLite DDL."""

from __future__ import annotations

SHOP_DDL = """
    CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT,
        last_name TEXT, status TEXT, schedule TEXT, box TEXT, signup_date TEXT,
        email_opt_in INTEGER, updated_at TEXT);
    CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT,
        total REAL, currency TEXT, created_at TEXT, updated_at TEXT);
    CREATE TABLE order_items (order_id INTEGER, product_id INTEGER, sku TEXT,
        name TEXT, quantity INTEGER, price REAL, category TEXT);
    CREATE INDEX ix_orders_updated ON orders (updated_at, id);
"""
