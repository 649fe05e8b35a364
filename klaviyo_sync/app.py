"""The one wiring place: settings in; engines, stores, sender and services out.

Every part is built on first use, once, from the settings, and :meth:`App.close` closes
what was built, once, in the reverse order. The CLI, the daemon and the demo build their
parts here; nothing else opens a database or builds a sender, so each stage's modules
take their collaborators as arguments (and tests pass fakes, such as
:class:`~klaviyo_sync.business.customers.InMemoryCustomers`, the same way).

Optional parts are None when the settings switch them off: ``business_engine``,
``customers`` and ``order_tracker`` without ``business.url`` (or with orders off), and
``suppression`` with ``suppression.enabled = false``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.engine import Engine

from klaviyo_sync.config import Settings
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.senders import caps_of, default_worker_id

if TYPE_CHECKING:
    from klaviyo_sync.business.consent_records import ConsentApi
    from klaviyo_sync.business.consent_sync import ConsentSync
    from klaviyo_sync.business.customers import CustomerDirectory
    from klaviyo_sync.business.missed_signups import SignupOutcome
    from klaviyo_sync.business.optouts import OptoutsPass
    from klaviyo_sync.business.order_tracker import OrderTracker
    from klaviyo_sync.business.reconcile import Reconciler
    from klaviyo_sync.catalog.sync import CatalogSync
    from klaviyo_sync.daemon.locks import RoleLock
    from klaviyo_sync.parsers.ingest import Ingestor
    from klaviyo_sync.privacy.forget import Forgetter
    from klaviyo_sync.profile_sync import ProfileSync
    from klaviyo_sync.queue.store import QueueStore
    from klaviyo_sync.senders.base import Sender
    from klaviyo_sync.senders.hooks import SuppressionHook
    from klaviyo_sync.senders.runner import Runner

log = get_logger(__name__)

_UNSET = object()
T = TypeVar("T")


class Build(enum.Enum):
    """The default of an :class:`App` part: build it from the settings."""

    FROM_SETTINGS = "from settings"


FROM_SETTINGS = Build.FROM_SETTINGS


def connect_state(settings: Settings, create: bool = True) -> Engine:
    """An engine on the state database without the schema check (``db upgrade``/``status``
    and the daemon, which waits for the database and migrates it itself); with ``create``
    False a missing SQLite file is an error, not created."""
    from klaviyo_sync.state import db

    return db.create_engine(settings.state.url, settings.state.sqlite_busy_timeout_s,
                            create=create)


def connect_business_writer(settings: Settings) -> Engine:
    """A writable engine on the business database: the demo fills it with sample data."""
    from klaviyo_sync.business.db import open_writer

    return open_writer(settings.business.url)


class App:
    """The parts of one klaviyo-sync process, built lazily from ``settings``.

    A part may be given instead (the daemon opens the state engine itself; tests pass
    fakes): the app then uses it and leaves closing it to whoever made it. ``customers``
    and ``suppression`` may be given as None to go without.
    """

    def __init__(self, settings: Settings, *, state_engine: Engine | None = None,
                 worker_id: str | None = None, sender: Sender | None = None,
                 customers: CustomerDirectory | Build | None = FROM_SETTINGS,
                 suppression: SuppressionHook | Build | None = FROM_SETTINGS,
                 read_only: bool = False) -> None:
        self.settings = settings
        #: A read-only command's app creates nothing: no state file, folder or schema.
        self.read_only = read_only
        self.worker_id = worker_id or default_worker_id()
        self._state_engine = state_engine
        self._built: dict[str, object] = {}
        if sender is not None:
            self._built["sender"] = sender
        if customers is not FROM_SETTINGS:
            self._built["customers"] = customers
        if suppression is not FROM_SETTINGS:
            self._built["suppression"] = suppression
        self._closers: list[Callable[[], None]] = []
        self._closed = False

    def __enter__(self) -> App:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close every part that was built (the newest first); a second call does nothing."""
        closers, self._closers = self._closers, []
        self._closed = True
        for close in reversed(closers):
            close()

    # -- the state database ------------------------------------------------------------

    @property
    def state_engine(self) -> Engine:
        """The state database, refused if its schema is outdated (created if empty)."""
        if self._state_engine is None:
            from klaviyo_sync.state.db import open_state

            engine = open_state(self.settings.state.url,
                                self.settings.state.sqlite_busy_timeout_s,
                                create=not self.read_only)
            self._own(engine.dispose)
            self._state_engine = engine
        return self._state_engine

    @property
    def queue(self) -> QueueStore:
        """The event queue on the state database."""
        return self._once("queue", self._build_queue)

    def role_lock(self, role: str, resource: str, enabled: bool = True) -> RoleLock:
        """A lock for ``role`` on ``resource`` (see daemon/locks.py), released at close."""
        from klaviyo_sync.daemon.locks import role_lock

        lock = role_lock(self.state_engine, role, resource, enabled)
        self._own(lock.dispose)
        return lock

    # -- the business database -----------------------------------------------------------

    @property
    def business_engine(self) -> Engine | None:
        """The business database, read-only; None when ``business.url`` is empty."""
        return self._once("business_engine", self._build_business_engine)

    @property
    def customers(self) -> CustomerDirectory | None:
        """Customers by business id; None without a business database."""
        return self._once("customers", self._build_customers)

    @property
    def suppression(self) -> SuppressionHook | None:
        """The suppressor the runner and the order tracker share; None when it is off."""
        return self._once("suppression", self._build_suppression)

    @property
    def catalog_sync(self) -> CatalogSync | None:
        """The catalog pass; None when ``business.url`` is empty or the catalog is off."""
        return self._once("catalog_sync", self._build_catalog_sync)

    @property
    def order_tracker(self) -> OrderTracker | None:
        """The orders pass; None when ``business.url`` is empty or orders are off."""
        return self._once("order_tracker", self._build_order_tracker)

    # -- consent both ways ---------------------------------------------------------------

    @property
    def consent_sync(self) -> ConsentSync | None:
        """The consent pass (business -> Klaviyo); None when ``[consent] enabled`` is
        false or there is no business database."""
        if not self.settings.consent.enabled:
            return None
        return self._once("consent_sync", self._build_consent_sync)

    @property
    def optouts(self) -> OptoutsPass | None:
        """The optouts pass (Klaviyo -> business); None like :attr:`consent_sync`."""
        if not self.settings.consent.enabled or self.business_engine is None:
            return None
        return self._once("optouts", self._build_optouts)

    def reconciler(self, dry_run: bool) -> Reconciler | None:
        """`consent reconcile`: a dry run works while consent is still off (to look before
        turning it on); None without a business database or, to apply, with it off."""
        if not dry_run and not self.settings.consent.enabled:
            return None
        sync = self._once("consent_sync", self._build_consent_sync)
        if sync is None:
            return None
        from klaviyo_sync.business.reconcile import Reconciler
        from klaviyo_sync.senders.audit import AuditLog

        return Reconciler(sync, AuditLog(self.state_engine, "consent-reconcile"))

    def profile_sync(self, dry_run: bool = False) -> ProfileSync | None:
        """The profiles pass; None when ``business.url`` is empty or profiles are off.

        ``dry_run`` writes the import jobs' bodies to the outbox and records nothing.
        """
        name = "profile_sync_dry_run" if dry_run else "profile_sync"
        return self._once(name, lambda: self._build_profile_sync(dry_run))

    # -- the stages ------------------------------------------------------------------

    @property
    def sender(self) -> Sender:
        """The sender ``[sender] kind`` names: Klaviyo's API, or the dry-run outbox."""
        return self._once("sender", self._build_sender)

    @property
    def runner(self) -> Runner:
        """The queue's runner: the sender, the customer directory and the suppressor."""
        return self._once("runner", self._build_runner)

    @property
    def ingestor(self) -> Ingestor:
        """The log tailer and parser that fills the queue."""
        return self._once("ingestor", self._build_ingestor)

    def forgetter(self, ask_klaviyo: bool = True) -> Forgetter:
        """What `klaviyo-sync forget` runs (privacy/forget.py), built once; without
        ``ask_klaviyo`` (a dry run) no sender is built at all."""
        return self._once(f"forgetter_{ask_klaviyo}",
                          lambda: self._build_forgetter(ask_klaviyo))

    def _build_forgetter(self, ask_klaviyo: bool) -> Forgetter:
        from klaviyo_sync.business.customers import Customer, SqlCustomerReader
        from klaviyo_sync.privacy.forget import Forgetter
        from klaviyo_sync.privacy.tombstones import Hasher, load_key

        settings, engine = self.settings, self.state_engine
        business = self.business_engine
        reader = SqlCustomerReader(business, settings.business) if business else None

        def find(emails: set[str], ids: set[str]) -> list[Customer]:
            assert reader is not None
            return [*reader.by_email(emails), *reader.lookup(ids).values()]

        def hasher(create: bool) -> Hasher:
            return Hasher(load_key(settings.privacy.key_file, engine, create=create))

        outbox = Path(settings.sender.outbox) if settings.sender.kind == "dry-run" else None
        return Forgetter(engine, self.queue, hasher, self.sender if ask_klaviyo else None,
                         find if reader is not None else None, outbox)

    def missed_signups(self, since: date | None = None, until: date | None = None,
                       include_klaviyo: bool = False) -> SignupOutcome:
        """What `klaviyo-sync missed-signups` does (see signups.py)."""
        from klaviyo_sync.signups import run_ruleset

        return run_ruleset(self, since, until, include_klaviyo)

    # -- building ---------------------------------------------------------------------

    def _once(self, name: str, build: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError(f"the app is closed: cannot build its {name}")
        found = self._built.get(name, _UNSET)
        if found is _UNSET:
            found = build()
            self._built[name] = found
        return found  # type: ignore[return-value]

    def _own(self, close: Callable[[], None]) -> None:
        self._closers.append(close)

    def _build_queue(self) -> QueueStore:
        from klaviyo_sync.queue.store import QueueStore

        return QueueStore(self.state_engine)

    def _build_business_engine(self) -> Engine | None:
        if not self.settings.business.url:
            return None
        from klaviyo_sync.business.db import open_business

        engine = open_business(self.settings.business.url)
        self._own(engine.dispose)
        return engine

    def _build_customers(self) -> CustomerDirectory | None:
        business = self.business_engine
        if business is None:
            return None
        from klaviyo_sync.business.customers import SqlCustomerReader

        return SqlCustomerReader(business, self.settings.business)

    def _build_suppression(self) -> SuppressionHook | None:
        if not self.settings.suppression.enabled:
            return None
        from klaviyo_sync.business.suppression import Suppressor
        from klaviyo_sync.privacy.tombstones import tombstone_source

        return Suppressor(self.state_engine, self.settings.suppression,
                          tombstone_source(self.state_engine, self.settings.privacy.key_file))

    def _build_order_tracker(self) -> OrderTracker | None:
        if not self.settings.orders.enabled:
            return None
        business, customers = self.business_engine, self.customers
        if business is None or customers is None:
            return None
        from klaviyo_sync.business.order_tracker import OrderTracker
        from klaviyo_sync.business.orders import OrderReader
        from klaviyo_sync.business.products import ProductReader

        s = self.settings
        # The products table (when there is one) gives order lines their catalog links.
        products = ProductReader(business, s.catalog) if s.catalog.enabled else None
        return OrderTracker(s, self.state_engine,
                            OrderReader(business, s.business, s.orders.page_size),
                            customers, self.suppression,
                            text_times=business.dialect.name == "sqlite", products=products)

    def _build_catalog_sync(self) -> CatalogSync | None:
        business = self.business_engine
        if business is None or not self.settings.catalog.enabled:
            return None
        from klaviyo_sync.catalog.sync import build_catalog_sync

        return build_catalog_sync(self.settings, self.state_engine, business, self.sender)

    def _build_consent_sync(self) -> ConsentSync | None:
        business = self.business_engine
        if business is None:
            return None
        from klaviyo_sync.business.consent_source import ConsentReader
        from klaviyo_sync.business.consent_sync import ConsentSync
        from klaviyo_sync.business.optouts import OptoutRecorder

        s = self.settings
        reader = ConsentReader(business, s.business, s.consent)
        from klaviyo_sync.privacy.tombstones import tombstone_source

        return ConsentSync(s, self.state_engine, reader, self._consent_api(),
                           OptoutRecorder(s.consent.custom_source, reader.by_email),
                           observer=self.suppression,
                           text_times=business.dialect.name == "sqlite",
                           tombstones=tombstone_source(self.state_engine,
                                                       s.privacy.key_file))

    def _build_optouts(self) -> OptoutsPass:
        from klaviyo_sync.business.consent_source import ConsentReader
        from klaviyo_sync.business.optouts import OptoutRecorder, OptoutsPass

        s = self.settings
        business = self.business_engine
        lookup = (ConsentReader(business, s.business, s.consent).by_email
                  if business is not None else None)
        return OptoutsPass(self.state_engine, self._consent_api(), s.consent,
                           OptoutRecorder(s.consent.custom_source, lookup),
                           self._once("writeback_engine", self._build_writeback_engine))

    def _build_writeback_engine(self) -> Engine | None:
        # Opt-in ([consent] writeback_url): the only engine that may write the business DB.
        if not self.settings.consent.writeback_url:
            return None
        from klaviyo_sync.business.db import open_writer

        engine = open_writer(self.settings.consent.writeback_url)
        self._own(engine.dispose)
        return engine

    def _consent_api(self) -> ConsentApi:
        return self._once("consent_api", self._build_consent_api)

    def _build_consent_api(self) -> ConsentApi:
        from klaviyo_sync.senders.client import KlaviyoClient
        from klaviyo_sync.senders.consent import KlaviyoConsentApi
        from klaviyo_sync.senders.dryrun import DryRunConsentApi, DryRunSender

        c, sender = self.settings.consent, self.sender
        if isinstance(sender, DryRunSender):
            return DryRunConsentApi(sender, c.custom_source, c.list_id)
        if isinstance(sender, KlaviyoClient):
            return KlaviyoConsentApi(sender, c.custom_source, c.list_id)
        raise ConfigError(f"the consent passes cannot use a {type(sender).__name__} sender")

    def _build_profile_sync(self, dry_run: bool) -> ProfileSync | None:
        business = self.business_engine
        if business is None or not self.settings.profiles.enabled:
            return None
        from klaviyo_sync.profile_sync import build_profile_sync

        if dry_run:
            sender = self._dry_run_sender()
            self._own(sender.close)
        else:
            sender = self.sender
        from klaviyo_sync.privacy.tombstones import tombstone_source

        def forget(asked_by: str, customer_id: str) -> None:
            self.forgetter().forget(customer_id=customer_id, asked_by=asked_by)

        return build_profile_sync(self.settings, self.state_engine, business, sender,
                                  dry_run=dry_run,
                                  tombstones=tombstone_source(self.state_engine,
                                                              self.settings.privacy.key_file),
                                  forget=forget)

    def _build_sender(self) -> Sender:
        sender = (self._dry_run_sender() if self.settings.sender.kind == "dry-run"
                  else self._klaviyo_client())
        self._own(sender.close)
        return sender

    def _dry_run_sender(self) -> Sender:
        from klaviyo_sync.senders.dryrun import DryRunSender

        return DryRunSender(self.settings.sender.outbox, caps_of(self.settings))

    def _klaviyo_client(self) -> Sender:
        import requests

        from klaviyo_sync.senders.audit import AuditLog
        from klaviyo_sync.senders.auth import ApiKeyAuth, Credentials, OAuthAuth
        from klaviyo_sync.senders.client import KlaviyoClient, check_base_url
        from klaviyo_sync.senders.pacing import PUBLISHED, Pacer

        settings, engine = self.settings, self.state_engine
        k = settings.klaviyo
        base_url = check_base_url(k.base_url)
        session = requests.Session()
        credentials: Credentials
        if k.auth == "oauth":
            client_id, secret, refresh = settings.oauth_credentials()
            credentials = OAuthAuth(session, k.oauth_token_url or f"{base_url}/oauth/token",
                                    client_id, secret, refresh, engine, timeout_s=k.timeout_s)
        else:
            credentials = ApiKeyAuth(settings.api_key() or "")
        pacer = Pacer(PUBLISHED if k.respect_published_limits else None)
        return KlaviyoClient(base_url, k.revision, credentials, pacer,
                             AuditLog(engine, self.worker_id), caps=caps_of(settings),
                             timeout_s=k.timeout_s, pool_size=settings.sender.concurrency + 2,
                             session=session)

    def _build_runner(self) -> Runner:
        from klaviyo_sync.senders.runner import Runner

        runner = Runner(self.settings, self.state_engine, self.queue, self.sender,
                        self.customers, self.suppression, self.worker_id)
        self._own(runner.close)  # stops its heartbeat before the engine goes
        return runner

    def _build_ingestor(self) -> Ingestor:
        from klaviyo_sync.parsers.ingest import Ingestor

        return Ingestor(self.settings, self.state_engine)

