"""Settings: read `settings.toml` once, validate every key up front, resolve secrets.

Only the CLI calls :func:`load`; everything else receives a :class:`Settings` (or the
section it needs) as an explicit argument. Secrets never live in the TOML: the file names
an environment variable or a file to read them from, and :func:`Settings.redacted` is
what ``config show`` prints.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from klaviyo_sync.exceptions import ConfigError

#: Where settings are looked for when neither --config nor KLAVIYO_SYNC_CONFIG is given.
DEFAULT_CONFIG_PATHS = (Path("settings.toml"), Path("/etc/klaviyo-sync/settings.toml"))

#: The six business-log event types marketing cares about (docs/architecture.md, "Stages").
KNOWN_EVENT_TYPES = (
    "cancelled",
    "contact.form",
    "failed.payment",
    "referral.credit",
    "shipping.email",
    "started.signup",
)

#: What a ``[unique_ids]`` template may name: the log line's own id, the customer id (the
#: email when the line has none), the event time in Unix seconds, the event type.
UNIQUE_ID_FIELDS = ("line", "customer", "unix", "type")
_TEMPLATE_FIELD = re.compile(r"{([^{}]*)}")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration_s(text: str) -> float:
    """'30d', '12h', '90s', '250ms' or a bare number of seconds, as seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 12h, 30d)")
    return float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]


@dataclass(frozen=True)
class LogSettings:
    path: str = "/var/log/business/system.log"
    format: str = "kv"
    pattern: str = ""
    timezone: str = "UTC"
    max_line_bytes: int = 1_048_576
    read_chunk_bytes: int = 1_048_576
    backfill_after_hours: float = 24.0
    missing_file_warn_s: float = 60.0

    def validate(self) -> None:
        _one_of("log.format", self.format, ("kv", "jsonl", "regex"))
        if self.format == "regex":
            if not self.pattern:
                raise ValueError("log.pattern: required when format = \"regex\"")
            try:
                compiled = re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"log.pattern: not a valid regular expression: {exc}") from None
            missing = {"time", "event"} - set(compiled.groupindex)
            if missing:
                raise ValueError(
                    f"log.pattern: needs named groups (?P<time>...) and (?P<event>...); "
                    f"missing {', '.join(sorted(missing))}"
                )
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"log.timezone: unknown IANA time zone {self.timezone!r} (e.g. Europe/London)"
            ) from None
        _at_least("log.max_line_bytes", self.max_line_bytes, 256)
        _at_least("log.read_chunk_bytes", self.read_chunk_bytes, 4096)
        _at_least("log.backfill_after_hours", self.backfill_after_hours, 0)


@dataclass(frozen=True)
class StateSettings:
    url: str = "sqlite:////var/lib/klaviyo-sync/state.db"
    sqlite_busy_timeout_s: float = 30.0

    def validate(self) -> None:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", self.url):
            raise ValueError(
                "state.url: must be a sqlite:/// or postgresql:// URL "
                f"(got {_redact_url(self.url)!r})"
            )


@dataclass(frozen=True)
class BusinessColumns:
    """Column names of the business database; defaults are business/sample_data.py's."""

    customer_id: str = "id"
    customer_email: str = "email"
    customer_first_name: str = "first_name"
    customer_last_name: str = "last_name"
    customer_status: str = "status"
    customer_schedule: str = "schedule"
    customer_box: str = "box"
    customer_signup_date: str = "signup_date"
    customer_email_opt_in: str = "email_opt_in"
    customer_email_opt_in_at: str = "email_opt_in_at"
    customer_updated_at: str = "updated_at"
    order_id: str = "id"
    order_customer_id: str = "customer_id"
    order_status: str = "status"
    order_total: str = "total"
    order_currency: str = "currency"
    order_created_at: str = "created_at"
    order_updated_at: str = "updated_at"
    item_order_id: str = "order_id"
    item_product_id: str = "product_id"
    item_sku: str = "sku"
    item_name: str = "name"
    item_quantity: str = "quantity"
    item_price: str = "price"
    item_category: str = "category"


@dataclass(frozen=True)
class BusinessSettings:
    url: str = ""
    customers_table: str = "customers"
    orders_table: str = "orders"
    order_items_table: str = "order_items"
    timezone: str = "UTC"
    lookup_batch_size: int = 500
    columns: BusinessColumns = field(default_factory=BusinessColumns)

    def validate(self) -> None:
        if self.url and "://" not in self.url:
            raise ValueError("business.url: must be an SQLAlchemy URL such as mysql+pymysql://...")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"business.timezone: unknown IANA time zone {self.timezone!r}"
            ) from None
        _at_least("business.lookup_batch_size", self.lookup_batch_size, 1)
        for name in ("customers_table", "orders_table", "order_items_table"):
            _identifier(f"business.{name}", getattr(self, name))
        for f in dataclasses.fields(self.columns):
            _identifier(f"business.columns.{f.name}", getattr(self.columns, f.name))


@dataclass(frozen=True)
class ProfileProperties:
    """Names of the custom profile properties that carry the customer's current data."""

    schedule: str = "Schedule"
    status: str = "Status"
    box: str = "Box"
    signup_date: str = "SignUpDate"
    missed_signup: str = "MissedSignup"


@dataclass(frozen=True)
class KlaviyoSettings:
    base_url: str = "https://a.klaviyo.com"
    revision: str = "2026-07-15"
    auth: str = "api_key"
    api_key_env: str = "KLAVIYO_API_KEY"
    api_key_file: str = ""
    oauth_client_id_env: str = "KLAVIYO_OAUTH_CLIENT_ID"
    oauth_client_secret_env: str = "KLAVIYO_OAUTH_CLIENT_SECRET"
    oauth_refresh_token_env: str = "KLAVIYO_OAUTH_REFRESH_TOKEN"
    oauth_token_url: str = ""
    timeout_s: float = 30.0
    generate_events: bool = True
    default_currency: str = "USD"
    respect_published_limits: bool = True
    profile_properties: ProfileProperties = field(default_factory=ProfileProperties)

    def validate(self) -> None:
        _one_of("klaviyo.auth", self.auth, ("api_key", "oauth"))
        if not re.match(r"^https?://[^/\s]+", self.base_url):
            raise ValueError(f"klaviyo.base_url: not an http(s) URL: {self.base_url!r}")
        if not re.match(r"^\d{4}-\d{2}-\d{2}(\.\w+)?$", self.revision):
            raise ValueError(f"klaviyo.revision: expected YYYY-MM-DD, got {self.revision!r}")
        if not re.match(r"^[A-Z]{3}$", self.default_currency):
            raise ValueError("klaviyo.default_currency: expected an ISO 4217 code such as USD")
        _at_least("klaviyo.timeout_s", self.timeout_s, 0.1)


@dataclass(frozen=True)
class SenderSettings:
    kind: str = "klaviyo"
    outbox: str = "/var/lib/klaviyo-sync/outbox.jsonl"
    batch_max_events: int = 1000
    batch_max_bytes: int = 5_000_000
    single_threshold: int = 3
    claim_batch: int = 1000
    concurrency: int = 4
    lease_s: float = 300.0
    heartbeat_s: float = 5.0
    runner_dead_after_s: float = 15.0
    max_attempts: int = 8
    backoff_base_s: float = 30.0
    backoff_max_s: float = 3600.0
    sent_retention: str = "30d"
    audit_retention: str = "90d"

    def validate(self) -> None:
        _one_of("sender.kind", self.kind, ("klaviyo", "dry-run"))
        if not 1 <= self.batch_max_events <= 1000:
            raise ValueError("sender.batch_max_events: must be between 1 and 1000 (Klaviyo's cap)")
        if not 1024 <= self.batch_max_bytes <= 5_000_000:
            raise ValueError("sender.batch_max_bytes: must be between 1024 and 5000000 (5 MB)")
        _at_least("sender.single_threshold", self.single_threshold, 0)
        _at_least("sender.claim_batch", self.claim_batch, 1)
        if not 1 <= self.concurrency <= 32:
            raise ValueError("sender.concurrency: must be between 1 and 32")
        _at_least("sender.lease_s", self.lease_s, 5)
        _at_least("sender.heartbeat_s", self.heartbeat_s, 0.1)
        _at_least("sender.runner_dead_after_s", self.runner_dead_after_s,
                  2 * self.heartbeat_s)
        _at_least("sender.max_attempts", self.max_attempts, 1)
        _at_least("sender.backoff_base_s", self.backoff_base_s, 0)
        _at_least("sender.backoff_max_s", self.backoff_max_s, self.backoff_base_s)
        for name in ("sent_retention", "audit_retention"):
            try:
                parse_duration_s(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"sender.{name}: {exc}") from None


@dataclass(frozen=True)
class OrderSettings:
    enabled: bool = True
    overlap_s: float = 300.0
    page_size: int = 5000
    placed_statuses: tuple[str, ...] = ("placed",)
    cancelled_statuses: tuple[str, ...] = ("cancelled",)
    fulfilled_statuses: tuple[str, ...] = ("completed",)
    refunded_statuses: tuple[str, ...] = ("refunded",)

    def validate(self) -> None:
        _at_least("orders.overlap_s", self.overlap_s, 0)
        _at_least("orders.page_size", self.page_size, 1)
        seen: dict[str, str] = {}
        for name in ("placed_statuses", "cancelled_statuses", "fulfilled_statuses",
                     "refunded_statuses"):
            for status in getattr(self, name):
                if status in seen:
                    raise ValueError(
                        f"orders.{name}: status {status!r} is also in orders.{seen[status]}"
                    )
                seen[status] = name


@dataclass(frozen=True)
class ProductColumns:
    """Column names of the products and product_variants tables (the documented schema).

    A URL or image column the table does not have is set to "" (for the URL,
    ``catalog.url_template`` then builds one).
    """

    product_id: str = "id"
    product_sku: str = "sku"
    product_name: str = "name"
    product_description: str = "description"
    product_url: str = "url"
    product_image_url: str = "image_url"
    product_price: str = "price"
    product_currency: str = "currency"
    product_category: str = "category"
    product_active: str = "active"
    product_inventory: str = "inventory"
    product_updated_at: str = "updated_at"
    variant_id: str = "id"
    variant_product_id: str = "product_id"
    variant_sku: str = "sku"
    variant_name: str = "name"
    variant_price: str = "price"
    variant_inventory: str = "inventory"
    variant_active: str = "active"
    variant_updated_at: str = "updated_at"


#: Columns that may be "" (the table lacks them).
_OPTIONAL_PRODUCT_COLUMNS = ("product_url", "product_image_url", "product_description",
                             "product_currency", "product_category", "product_inventory")


@dataclass(frozen=True)
class CatalogSettings:
    enabled: bool = True
    products_table: str = "products"
    variants_table: str = "product_variants"
    url_template: str = ""
    image_url_template: str = ""
    batch_size: int = 100
    max_jobs_in_progress: int = 500
    job_poll_s: float = 1.0
    job_wait_s: float = 600.0
    overlap_s: float = 300.0
    columns: ProductColumns = field(default_factory=ProductColumns)

    def validate(self) -> None:
        if not 1 <= self.batch_size <= 100:
            raise ValueError("catalog.batch_size: must be between 1 and 100 (Klaviyo's cap)")
        if not 1 <= self.max_jobs_in_progress <= 500:
            raise ValueError("catalog.max_jobs_in_progress: must be between 1 and 500 "
                             "(Klaviyo's cap)")
        _at_least("catalog.job_poll_s", self.job_poll_s, 0.01)
        _at_least("catalog.job_wait_s", self.job_wait_s, self.job_poll_s)
        _at_least("catalog.overlap_s", self.overlap_s, 0)
        for name in ("products_table", "variants_table"):
            _identifier(f"catalog.{name}", getattr(self, name))
        for name in ("url_template", "image_url_template"):
            template = getattr(self, name)
            if template and "{id}" not in template:
                raise ValueError(f"catalog.{name}: must contain {{id}}, e.g. "
                                 "https://shop.example.com/item/{id}")
        for f in dataclasses.fields(self.columns):
            value = getattr(self.columns, f.name)
            if value == "" and f.name in _OPTIONAL_PRODUCT_COLUMNS:
                continue
            _identifier(f"catalog.columns.{f.name}", value)
        if not self.columns.product_url and not self.url_template:
            raise ValueError("catalog.url_template: required when catalog.columns.product_url "
                             "is empty (Klaviyo needs a URL per item)")


@dataclass(frozen=True)
class ProfileSyncSettings:
    """The profiles pass: customers -> Klaviyo profiles through bulk import jobs."""

    enabled: bool = True
    overlap_s: float = 300.0
    page_size: int = 5000
    batch_max_profiles: int = 10_000
    batch_max_bytes: int = 5_000_000
    readback_poll_s: float = 2.0
    readback_timeout_s: float = 600.0
    #: Where a pass reads and builds its customers: "full" passes (every customer) in a
    #: process of their own, "always", or "never" (in the pass's own process).
    reader_process: str = "full"
    #: Business column -> profile property name, sent along with the standard ones.
    extra_properties: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        _at_least("profiles.overlap_s", self.overlap_s, 0)
        _at_least("profiles.page_size", self.page_size, 1)
        if not 1 <= self.batch_max_profiles <= 10_000:
            raise ValueError("profiles.batch_max_profiles: must be between 1 and 10000 "
                             "(Klaviyo's cap)")
        if not 1024 <= self.batch_max_bytes <= 5_000_000:
            raise ValueError("profiles.batch_max_bytes: must be between 1024 and 5000000 (5 MB)")
        _at_least("profiles.readback_poll_s", self.readback_poll_s, 0.01)
        _at_least("profiles.readback_timeout_s", self.readback_timeout_s, 0)
        _one_of("profiles.reader_process", self.reader_process, ("full", "always", "never"))
        for column, name in self.extra_properties.items():
            _identifier(f"profiles.extra_properties.{column}", column)
            if not name.strip():
                raise ValueError(f"profiles.extra_properties.{column}: property name must "
                                 "not be empty")


@dataclass(frozen=True)
class SuppressionSettings:
    enabled: bool = True
    dead_statuses: tuple[str, ...] = ("Dead",)
    unsuppress_reactivated: bool = False


@dataclass(frozen=True)
class ConsentSettings:
    enabled: bool = False
    list_id: str = ""
    custom_source: str = "klaviyo-sync"
    #: Consent older than this is imported as historical; < 0: [log] backfill_after_hours.
    historical_after_hours: float = -1.0
    page_size: int = 1000
    sms_phone_column: str = ""
    sms_opt_in_column: str = ""
    writeback_url: str = ""
    writeback_statement: str = ""

    def validate(self) -> None:
        if not self.custom_source.strip():
            raise ValueError("consent.custom_source: must not be empty (it is how our own "
                             "consent records are recognised)")
        _at_least("consent.page_size", self.page_size, 1)
        for name in ("sms_phone_column", "sms_opt_in_column"):
            if getattr(self, name):
                _identifier(f"consent.{name}", getattr(self, name))
        if bool(self.sms_phone_column) != bool(self.sms_opt_in_column):
            raise ValueError("consent.sms_phone_column and consent.sms_opt_in_column: set "
                             "both (SMS on) or neither (SMS off)")
        if self.writeback_url and "://" not in self.writeback_url:
            raise ValueError("consent.writeback_url: must be an SQLAlchemy URL")
        if bool(self.writeback_url) != bool(self.writeback_statement.strip()):
            raise ValueError("consent.writeback_url and consent.writeback_statement: set "
                             "both (write-back on) or neither (off)")
        if self.writeback_statement and not re.search(
                r":(customer_id|email)\b", self.writeback_statement):
            raise ValueError("consent.writeback_statement: must use :customer_id or :email")

    def historical_after_h(self, log: LogSettings) -> float:
        """Hours after which consent counts as historical (the backfill threshold unless
        set)."""
        return log.backfill_after_hours if self.historical_after_hours < 0 \
            else self.historical_after_hours


@dataclass(frozen=True)
class MissedSignupSettings:
    active_status: str = "Active"
    signup_metric: str = "started.signup"
    klaviyo_checkout_metric: str = "Started Checkout"
    write_profile_flag: bool = False


@dataclass(frozen=True)
class ScheduleSettings:
    tail_s: float = 2.0
    send_s: float = 10.0
    orders_s: float = 60.0
    retry_s: float = 30.0
    consent_s: float = 300.0
    optouts_s: float = 600.0
    profiles_s: float = 300.0
    prune_cron: str = "0 4 * * *"
    catalog_cron: str = "30 3 * * *"
    catalog_changes_s: float = 300.0

    def validate(self) -> None:
        for name in ("tail_s", "send_s", "orders_s", "retry_s", "consent_s", "optouts_s",
                     "catalog_changes_s", "profiles_s"):
            _at_least(f"schedule.{name}", getattr(self, name), 0.1)
        for name in ("prune_cron", "catalog_cron"):
            if len(getattr(self, name).split()) != 5:
                raise ValueError(
                    f"schedule.{name}: expected 5 cron fields, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True)
class DaemonSettings:
    http_listen: str = ""
    shutdown_grace_s: float = 8.0
    tail_lock: bool = True
    job_backoff_max_s: float = 300.0
    hung_job_s: float = 3600.0
    status_interval_s: float = 10.0

    def validate(self) -> None:
        if self.http_listen:
            host, _, port = self.http_listen.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"daemon.http_listen: expected HOST:PORT, got {self.http_listen!r}"
                )
        _at_least("daemon.shutdown_grace_s", self.shutdown_grace_s, 0)
        _at_least("daemon.job_backoff_max_s", self.job_backoff_max_s, 0)
        _at_least("daemon.hung_job_s", self.hung_job_s, 0)
        _at_least("daemon.status_interval_s", self.status_interval_s, 0.1)


@dataclass(frozen=True)
class StatusSettings:
    degraded_backlog_age_s: float = 900.0
    failing_backlog_age_s: float = 7200.0
    degraded_dead_letters: int = 1
    degraded_tail_bytes_behind: int = 50_000_000
    degraded_orders_pass_age_s: float = 3600.0
    failing_pass_failures: int = 3
    degraded_pass_age_s: float = 900.0
    failing_pass_age_s: float = 3600.0
    degraded_tail_stuck_s: float = 300.0
    failing_tail_stuck_s: float = 1800.0
    business_timeout_s: float = 5.0

    def validate(self) -> None:
        _at_least("status.failing_backlog_age_s", self.failing_backlog_age_s,
                  self.degraded_backlog_age_s)
        _at_least("status.failing_pass_age_s", self.failing_pass_age_s,
                  self.degraded_pass_age_s)
        _at_least("status.failing_tail_stuck_s", self.failing_tail_stuck_s,
                  self.degraded_tail_stuck_s)
        _at_least("status.failing_pass_failures", self.failing_pass_failures, 1)
        _at_least("status.business_timeout_s", self.business_timeout_s, 0.1)


@dataclass(frozen=True)
class PrivacySettings:
    key_file: str = ""
    erase_statuses: tuple[str, ...] = ()
    erase_vanished: bool = False

    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "info"
    format: str = "auto"
    mask_emails: bool = True

    def validate(self) -> None:
        _one_of("logging.level", self.level, ("debug", "info", "warning", "error"))
        _one_of("logging.format", self.format, ("auto", "json", "console"))


def _default_events() -> dict[str, str]:
    return {name: name for name in KNOWN_EVENT_TYPES}


@dataclass(frozen=True)
class Settings:
    log: LogSettings = field(default_factory=LogSettings)
    state: StateSettings = field(default_factory=StateSettings)
    business: BusinessSettings = field(default_factory=BusinessSettings)
    klaviyo: KlaviyoSettings = field(default_factory=KlaviyoSettings)
    sender: SenderSettings = field(default_factory=SenderSettings)
    #: Event type in the log -> Klaviyo metric name. A type not listed is not synced.
    events: dict[str, str] = field(default_factory=_default_events)
    #: Event type -> unique_id template ("{line}" when not listed), see UNIQUE_ID_FIELDS.
    unique_ids: dict[str, str] = field(default_factory=dict)
    orders: OrderSettings = field(default_factory=OrderSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    profiles: ProfileSyncSettings = field(default_factory=ProfileSyncSettings)
    suppression: SuppressionSettings = field(default_factory=SuppressionSettings)
    consent: ConsentSettings = field(default_factory=ConsentSettings)
    missed_signups: MissedSignupSettings = field(default_factory=MissedSignupSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    status: StatusSettings = field(default_factory=StatusSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    #: The file these settings came from (None for built-in defaults).
    source: str | None = None

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "validate"):
                section.validate()
        for event_type, metric in self.events.items():
            if not metric.strip():
                raise ValueError(f"events.{event_type}: metric name must not be empty")
        for event_type, template in self.unique_ids.items():
            check_unique_id_template(f"unique_ids.{event_type}", template)

    def replace(self, **sections: Any) -> Settings:
        """A copy with whole sections or keys replaced, e.g. ``replace(log=...)``."""
        return dataclasses.replace(self, **sections)

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain data, with credentials in URLs shown as ``***``."""
        data = dataclasses.asdict(self)
        data["state"]["url"] = _redact_url(self.state.url)
        data["business"]["url"] = _redact_url(self.business.url)
        data["consent"]["writeback_url"] = _redact_url(self.consent.writeback_url)
        return data

    def api_key(self) -> str | None:
        """The Klaviyo private key from the environment variable or file the settings name."""
        key = os.environ.get(self.klaviyo.api_key_env, "").strip()
        if not key and self.klaviyo.api_key_file:
            try:
                key = Path(self.klaviyo.api_key_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"klaviyo.api_key_file: cannot read {self.klaviyo.api_key_file}: "
                    f"{exc.strerror}"
                ) from exc
        if not key:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            if creds and (Path(creds) / "klaviyo-api-key").is_file():
                key = (Path(creds) / "klaviyo-api-key").read_text(encoding="utf-8").strip()
        return key or None

    def oauth_credentials(self) -> tuple[str, str, str]:
        """OAuth client id, client secret and initial refresh token from the environment
        variables the settings name (empty strings for what is not set)."""
        k = self.klaviyo

        def env(name: str) -> str:
            return os.environ.get(name, "").strip()

        return (env(k.oauth_client_id_env), env(k.oauth_client_secret_env),
                env(k.oauth_refresh_token_env))

    def state_dir(self) -> Path | None:
        """The folder holding a SQLite state database, or None for a server database."""
        if self.state.url.startswith("sqlite:///") and ":memory:" not in self.state.url:
            return Path(self.state.url.removeprefix("sqlite:///")).parent
        return None


def check_unique_id_template(key: str, template: str) -> None:
    """A ``[unique_ids]`` template names only known fields, at least one of them."""
    names = _TEMPLATE_FIELD.findall(template)
    unknown = sorted(set(names) - set(UNIQUE_ID_FIELDS))
    if unknown:
        raise ValueError(f"{key}: unknown field {{{unknown[0]}}} in {template!r} "
                         f"(known: {', '.join('{' + n + '}' for n in UNIQUE_ID_FIELDS)})")
    if not names:
        raise ValueError(f"{key}: {template!r} names no field, so every event of the type "
                         "would share one unique_id (use e.g. \"{customer}_{unix}\")")


def _redact_url(url: str) -> str:
    """The URL with its password as ``***``, parsed as SQLAlchemy does (a password may hold
    ``/`` or ``:``); a URL that does not parse shows only its scheme."""
    if not url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        scheme, sep, _rest = url.partition("://")
        return f"{scheme}://***" if sep else "***"


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}: must be one of {', '.join(allowed)}; got {value!r}")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ValueError(f"{key}: must be at least {low}; got {value}")


def _identifier(key: str, value: str) -> None:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_$.]*$", value):
        raise ValueError(f"{key}: not a plain SQL identifier: {value!r}")


# --- building dataclasses from TOML, with errors that name the key -------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "table"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


def _toml_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "table"}.get(type(value), type(value).__name__)


def _coerce(key: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a table, got {_toml_type(value)}")
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected {_type_name(tp)}, got {_toml_type(value)}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a table, got {_toml_type(value)}")
        return {str(k): _coerce(f"{key}.{k}", str, v) for k, v in value.items()}
    duration = _duration(key, tp, value)
    if duration is not None:
        return duration
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (bool, int, str, float) and (type(value) is not tp):
        raise ValueError(f"{key}: expected {_type_name(tp)}, got {_toml_type(value)} {value!r}")
    return value


def _duration(key: str, tp: Any, value: Any) -> Any:
    """Every duration key takes a number of seconds or a text such as "10s" or "15m": keys
    ending in _s (a float of seconds), _hours (a float of hours) and _retention (kept as
    text, parsed where it is used). None when ``key`` is not a duration given that way."""
    name = key.rpartition(".")[2]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    try:
        if tp is float and name.endswith("_s") and isinstance(value, str):
            return parse_duration_s(value)
        if tp is float and name.endswith("_hours") and isinstance(value, str):
            return parse_duration_s(value) / 3600
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    if tp is str and name.endswith("_retention") and is_number:
        return f"{value:g}"
    return None


def _build(cls: Any, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in names:
            where = f"[{prefix}] " if prefix else ""
            raise ValueError(
                f"{where}unknown key {key!r} (known: {', '.join(sorted(names))})"
            )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(key, hints[name], value)
    return cls(**kwargs)


def from_mapping(data: Mapping[str, Any], source: str | None = None) -> Settings:
    """Build and validate settings from parsed TOML; raises ConfigError naming the key."""
    where = source or "settings"
    try:
        settings = _build(Settings, data, "")
        settings = dataclasses.replace(settings, source=source)
        settings.validate()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return settings


def resolve_path(explicit: str | None) -> Path:
    """The settings file to use: --config, then $KLAVIYO_SYNC_CONFIG, then the defaults."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("KLAVIYO_SYNC_CONFIG")
    if env:
        return Path(env)
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(p) for p in DEFAULT_CONFIG_PATHS)
    raise ConfigError(f"no settings file: none at {tried} (pass --config PATH)")


def load(path: str | Path | None = None) -> Settings:
    """Read, parse and validate a settings file."""
    resolved = resolve_path(str(path) if path else None)
    try:
        raw = resolved.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{resolved}: settings file not found") from None
    except OSError as exc:
        raise ConfigError(f"{resolved}: cannot read settings file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{resolved}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{resolved}: not valid TOML: {exc}") from None
    return from_mapping(data, str(resolved))
