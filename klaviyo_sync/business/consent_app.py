"""Construction of the consent parts from explicit arguments (for the wiring module).

Nothing here opens a database or builds a sender: the caller passes the state engine,
the business engine (read-only), the sender ``[sender] kind`` names, and for the
optional write-back a writable business engine.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from klaviyo_sync.business.consent_source import ConsentReader
from klaviyo_sync.business.consent_sync import ConsentSync
from klaviyo_sync.business.optouts import OptoutRecorder, OptoutsPass
from klaviyo_sync.business.reconcile import Reconciler
from klaviyo_sync.business.suppression import build_suppressor
from klaviyo_sync.config import Settings
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.senders.audit import AuditLog
from klaviyo_sync.senders.client import KlaviyoClient
from klaviyo_sync.senders.consent import ConsentApi, KlaviyoConsentApi
from klaviyo_sync.senders.dryrun import DryRunConsentApi, DryRunSender


def consent_api_for(settings: Settings, sender: Any) -> ConsentApi:
    """The consent API over the sender ``[sender] kind`` built."""
    c = settings.consent
    if isinstance(sender, DryRunSender):
        return DryRunConsentApi(sender, c.custom_source, c.list_id)
    if isinstance(sender, KlaviyoClient):
        return KlaviyoConsentApi(sender, c.custom_source, c.list_id)
    raise ConfigError(f"the consent passes cannot use a {type(sender).__name__} sender")


def build_consent_sync(settings: Settings, state_engine: Engine, business_engine: Engine,
                       sender: Any) -> ConsentSync:
    """The consent pass (business -> Klaviyo), its suppression hook included."""
    reader = ConsentReader(business_engine, settings.business, settings.consent)
    return ConsentSync(settings, state_engine, reader, consent_api_for(settings, sender),
                       OptoutRecorder(settings.consent.custom_source, reader.by_email),
                       observer=build_suppressor(settings, state_engine),
                       text_times=business_engine.dialect.name == "sqlite")


def build_optouts(settings: Settings, state_engine: Engine, business_engine: Engine | None,
                  sender: Any, writeback_engine: Engine | None = None) -> OptoutsPass:
    """The optouts pass (Klaviyo -> business); ``writeback_engine`` only when configured."""
    ids = (ConsentReader(business_engine, settings.business, settings.consent).by_email
           if business_engine is not None else None)
    return OptoutsPass(state_engine, consent_api_for(settings, sender), settings.consent,
                       OptoutRecorder(settings.consent.custom_source, ids), writeback_engine)


def build_reconciler(sync: ConsentSync) -> Reconciler:
    """The reconciliation over a consent pass; its summary goes to the audit trail."""
    return Reconciler(sync, AuditLog(sync.engine, "consent-reconcile"))
