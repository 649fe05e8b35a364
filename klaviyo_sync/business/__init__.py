"""The business system's data (customers, orders; read-only) and the rules built on it."""
