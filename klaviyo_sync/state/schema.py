"""Tables of the state database: queue, checkpoints, rejects, orders, suppressions, audit.

The Alembic migrations in ``state/migrations`` create exactly these; a test compares the
two so that neither drifts. Times are stored as naive UTC (SQLite has no time zone type;
keeping PostgreSQL the same makes the code one).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# BigInteger primary keys become INTEGER on SQLite so that they alias the rowid.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

#: The queue. One row per event that must reach Klaviyo.
events = Table(
    "events",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    # Deterministic, derived from the source (log line content, order id + event): it is
    # Klaviyo's unique_id too, so a resend after a crash is dropped by Klaviyo.
    Column("unique_id", String(128), nullable=False, unique=True),
    Column("metric", String(128), nullable=False),
    Column("source", String(16), nullable=False),  # "log" | "order"
    Column("customer_id", String(64)),
    Column("email", String(320)),
    Column("occurred_at", DateTime(), nullable=False),  # UTC
    Column("properties", JSON(), nullable=False),
    Column("profile", JSON()),  # profile attributes the source knew (names, phone)
    Column("value", Float()),
    Column("value_currency", String(3)),
    Column("backfill", Boolean(), nullable=False, default=False),
    Column("state", String(16), nullable=False),  # EventState
    Column("attempts", Integer(), nullable=False, default=0),
    Column("next_attempt_at", DateTime(), nullable=False),
    Column("lease_until", DateTime()),
    Column("leased_by", String(128)),  # set exactly while state is "leased"
    Column("last_error", Text()),
    Column("created_at", DateTime(), nullable=False),
    Column("sent_at", DateTime()),
    Index("ix_events_due", "state", "next_attempt_at"),
    Index("ix_events_customer", "customer_id"),
    Index("ix_events_metric_time", "metric", "occurred_at"),
)

#: Where the tailer stopped in a log file. Written in the same transaction as the events
#: produced from the bytes before ``offset``.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("name", String(512), primary_key=True),  # the configured log path
    Column("path", String(1024), nullable=False),  # the file actually being read
    Column("device", BigInteger()),
    Column("inode", BigInteger()),
    Column("fingerprint", String(64)),  # sha256 of the first fingerprint_len bytes
    Column("fingerprint_len", Integer(), nullable=False, default=0),
    # sha256 of the up to 1024 bytes before offset: a file resumed there must hold them
    Column("tail_fingerprint", String(64)),
    Column("offset", BigInteger(), nullable=False, default=0),
    Column("file_size", BigInteger(), nullable=False, default=0),  # size seen at last read
    Column("lines_read", BigInteger(), nullable=False, default=0),
    Column("updated_at", DateTime(), nullable=False),
)

#: Lines of a synced type that could not become an event, kept with the reason.
rejects = Table(
    "rejects",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("file", String(1024), nullable=False),
    Column("offset", BigInteger(), nullable=False),
    Column("length", BigInteger(), nullable=False),
    Column("raw", LargeBinary(), nullable=False),  # at most REJECT_RAW_BYTES of the line
    Column("truncated", Boolean(), nullable=False, default=False),
    Column("event_type", String(128)),
    Column("reason", Text(), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("line_hash", String(64), nullable=False, unique=True),
)

#: Per order, which events were enqueued; the order tracker's memory.
order_sync = Table(
    "order_sync",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64)),
    Column("last_status", String(64), nullable=False),
    Column("placed_at", DateTime()),
    Column("cancelled_at", DateTime()),
    Column("fulfilled_at", DateTime()),
    Column("refunded_at", DateTime()),
    Column("source_updated_at", DateTime()),
    Column("updated_at", DateTime(), nullable=False),
)

#: Who was put on Klaviyo's suppression list, when and why (one row per email).
suppressions = Table(
    "suppressions",
    metadata,
    Column("email", String(320), primary_key=True),
    Column("customer_id", String(64)),
    Column("reason", String(64), nullable=False),  # "status:Dead" | "not_opted_in"
    Column("state", String(16), nullable=False),  # "pending" | "sent" | "unsuppressed"
    Column("attempts", Integer(), nullable=False, default=0),
    Column("last_error", Text()),
    Column("created_at", DateTime(), nullable=False),
    Column("sent_at", DateTime()),
    Index("ix_suppressions_state", "state"),
)

#: One row per request made to Klaviyo.
audit = Table(
    "audit",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("at", DateTime(), nullable=False),
    Column("method", String(8), nullable=False),
    Column("endpoint", String(256), nullable=False),
    Column("items", Integer(), nullable=False, default=0),
    Column("status_code", Integer()),  # None when no answer came (timeout, dropped)
    Column("duration_ms", Float(), nullable=False),
    Column("error_codes", Text()),
    Column("worker", String(128)),
    Index("ix_audit_at", "at"),
)

#: Small named values: order watermark, last successful send, auth state, OAuth tokens.
meta = Table(
    "meta",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("value", Text(), nullable=False),
    Column("updated_at", DateTime(), nullable=False),
)

#: How many bytes of a rejected line are stored (a 5 MB line keeps its head and length).
REJECT_RAW_BYTES = 65_536
