"""Tables of the state database: queue, checkpoints, rejects, orders, catalog, suppressions,
profiles, consent, audit.

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
    text,
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

#: Per customer, what the consent pass did about their email (and SMS) opt-in. A row is
#: "sending" exactly while its subscription request may be in flight: a restart reads
#: Klaviyo back for those before sending anything again.
consent_sync = Table(
    "consent_sync",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("email", String(320)),
    Column("phone", String(32)),
    Column("state", String(16), nullable=False),  # ConsentState
    Column("sms_state", String(16)),  # ConsentState for SMS, None: no SMS wanted
    Column("consented_at", DateTime()),  # the business opt-in time, naive UTC
    Column("historical", Boolean(), nullable=False, default=False),
    Column("batch", String(32)),  # the request a "sending" row went out in
    Column("reason", Text()),  # conflict, refusal or invalid phone: why
    Column("attempts", Integer(), nullable=False, default=0),
    Column("subscribed_at", DateTime()),
    Column("updated_at", DateTime(), nullable=False),
    Index("ix_consent_sync_state", "state"),
    Index("ix_consent_sync_email", "email"),
)

#: Opt-outs read back from Klaviyo (one row per email and suppression time), for the
#: business to apply; our own suppressions are kept too, marked, and never reported.
optouts = Table(
    "optouts",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),
    Column("customer_id", String(64)),
    Column("reason", String(32), nullable=False),  # UNSUBSCRIBE, SPAM_COMPLAINT, ...
    Column("at", DateTime(), nullable=False),  # Klaviyo's suppression timestamp, UTC
    Column("source", String(16), nullable=False),  # "klaviyo" | "ours"
    Column("method", String(64)),
    Column("state", String(16), nullable=False),  # OptoutState
    Column("written_back_at", DateTime()),
    Column("last_error", Text()),
    Column("recorded_at", DateTime(), nullable=False),
    Index("ux_optouts_email_at", "email", "at", "reason", unique=True),
    Index("ix_optouts_recorded", "recorded_at"),
)

#: Per customer, what the profiles pass last sent and what Klaviyo made of it.
profile_sync = Table(
    "profile_sync",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    # Digest of the profile last imported (None: never imported): unchanged -> not resent.
    Column("digest", String(32)),
    Column("status", String(16), nullable=False),  # ProfileStatus: "imported" | "failed"
    Column("job_id", String(64)),  # the job that imported it or reported its failure
    Column("failed_digest", String(32)),  # the profile Klaviyo refused (not sent again)
    Column("last_error", Text()),  # Klaviyo's code and detail for a failed profile
    Column("imported_at", DateTime()),
    Column("updated_at", DateTime(), nullable=False),
    # Only the failed rows, in the order `profiles failed` lists them: every imported row
    # would pay for a full index on status (see migration 0008).
    Index("ix_profile_sync_failed", "updated_at", "customer_id",
          sqlite_where=text("status = 'failed'"), postgresql_where=text("status = 'failed'")),
)

#: One row per bulk profile import request: written before the POST (``posting``), given
#: Klaviyo's job id right after the 202 (``sent``), ``done`` once read back.
profile_jobs = Table(
    "profile_jobs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(64), unique=True),
    Column("status", String(16), nullable=False),  # JobState
    Column("total", Integer(), nullable=False),
    Column("failed", Integer()),
    Column("created_at", DateTime(), nullable=False),
    Column("sent_at", DateTime()),
    Column("read_at", DateTime()),
    Index("ix_profile_jobs_status", "status"),
)

#: The customers of a request not finished yet (posting or sent), beside its row rather
#: than in it: SQLite rewrites a whole row, its 450 KB of customers included, for each
#: change of status. {customer id: digest, ...} in body order (JSON, not JSONB, on
#: PostgreSQL: the order is kept), so an import error's pointer index finds its
#: customer. Deleted when the request is done or abandoned (see migration 0009).
profile_job_customers = Table(
    "profile_job_customers",
    metadata,
    Column("job_row_id", _BigId, primary_key=True, autoincrement=False),
    Column("customers", JSON(), nullable=False),
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

#: Runners draining the queue: who holds leases, from which host and process, and when it
#: last showed it is alive (see queue/runners.py).
runners = Table(
    "runners",
    metadata,
    Column("worker", String(128), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer(), nullable=False),
    Column("started_at", DateTime(), nullable=False),
    Column("heartbeat_at", DateTime(), nullable=False),
)

#: Erasure requests (`klaviyo-sync forget`): keyed hashes of the person's email and
#: customer id, never the clear values, what was removed and what Klaviyo answered. A row
#: is also the tombstone that keeps later lines and orders of that person from being sent.
erasures = Table(
    "erasures",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("requested_at", DateTime(), nullable=False),
    Column("asked_by", String(16), nullable=False),  # "email" | "customer" | "status" ...
    Column("email_hash", String(64), unique=True),
    Column("customer_hash", String(64), unique=True),
    Column("state", String(16), nullable=False),  # ErasureState
    Column("removed", JSON()),  # {"events": n, ...} of the local erasure
    Column("klaviyo_status", Integer()),  # HTTP status of the deletion request
    Column("klaviyo_detail", Text()),  # Klaviyo's answer, personal data masked
    Column("klaviyo_at", DateTime()),
    Column("skipped", Integer(), nullable=False, default=0),  # later events not sent
    Column("lifted_at", DateTime()),  # the business showed them active again
)

#: Small named values: order watermark, last successful send, auth state, OAuth tokens.
meta = Table(
    "meta",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("value", Text(), nullable=False),
    Column("updated_at", DateTime(), nullable=False),
)

#: Per catalog object (category, item, variant): what Klaviyo holds as far as we know.
catalog_sync = Table(
    "catalog_sync",
    metadata,
    Column("kind", String(16), primary_key=True),  # CatalogKind
    Column("external_id", String(128), primary_key=True),
    # sha256 of the attributes Klaviyo holds (None: not in Klaviyo, or unknown).
    Column("digest", String(64)),
    Column("in_klaviyo", Boolean(), nullable=False, default=False),
    # Only objects this program created are ever deleted.
    Column("created_by_us", Boolean(), nullable=False, default=False),
    Column("state", String(16), nullable=False),  # SyncState
    Column("job_id", BigInteger()),  # the catalog_jobs row in flight for it
    Column("last_error", Text()),  # Klaviyo's detail when it refused the object
    Column("updated_at", DateTime(), nullable=False),
    Index("ix_catalog_sync_state", "state"),
)

#: One row per catalog bulk job: recorded before its POST, so none is ever left unread.
catalog_jobs = Table(
    "catalog_jobs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # CatalogKind
    Column("action", String(16), nullable=False),  # CatalogAction
    Column("status", String(16), nullable=False),  # JobStatus
    Column("klaviyo_job_id", String(64)),
    # [[external_id, digest], ...] in the order of the request body.
    Column("items", JSON(), nullable=False),
    Column("total", Integer(), nullable=False, default=0),
    Column("failed", Integer(), nullable=False, default=0),
    Column("error", Text()),
    Column("created_at", DateTime(), nullable=False),
    Column("posted_at", DateTime()),
    Column("read_back_at", DateTime()),
    Index("ix_catalog_jobs_status", "status"),
)

#: How many bytes of a rejected line are stored (a 5 MB line keeps its head and length).
REJECT_RAW_BYTES = 65_536
