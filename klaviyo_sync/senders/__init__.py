"""Delivery to Klaviyo: the client, its pacing and auth, the dry-run sender, the runner."""

from __future__ import annotations

import os
import socket

from sqlalchemy.engine import Engine

from klaviyo_sync.config import Settings
from klaviyo_sync.senders.audit import AuditLog
from klaviyo_sync.senders.base import DeliveryReport, OutgoingEvent, Sender
from klaviyo_sync.senders.batching import BatchCaps

__all__ = ["DeliveryReport", "OutgoingEvent", "Sender", "build_sender", "default_worker_id"]


def default_worker_id() -> str:
    """``hostname:pid``: unique among the runners sharing one queue."""
    return f"{socket.gethostname()}:{os.getpid()}"


def caps_of(settings: Settings) -> BatchCaps:
    s = settings.sender
    return BatchCaps(max_events=s.batch_max_events, max_bytes=s.batch_max_bytes,
                     single_threshold=s.single_threshold)


def build_sender(settings: Settings, engine: Engine | None,
                 worker_id: str | None = None) -> Sender:
    """The sender ``[sender] kind`` names: Klaviyo's API, or the dry-run outbox."""
    if settings.sender.kind == "dry-run":
        from klaviyo_sync.senders.dryrun import DryRunSender

        return DryRunSender(settings.sender.outbox, caps_of(settings))
    import requests

    from klaviyo_sync.senders.auth import ApiKeyAuth, Credentials, OAuthAuth
    from klaviyo_sync.senders.client import KlaviyoClient, check_base_url
    from klaviyo_sync.senders.pacing import PUBLISHED, Pacer

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
                         AuditLog(engine, worker_id or default_worker_id()),
                         caps=caps_of(settings), timeout_s=k.timeout_s,
                         pool_size=settings.sender.concurrency + 2, session=session)
