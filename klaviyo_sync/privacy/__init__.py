"""Erasure requests: forgetting a person in Klaviyo and in our own state, and the
tombstones that keep them forgotten."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from klaviyo_sync.config import Settings
from klaviyo_sync.privacy.forget import Forgetter
from klaviyo_sync.privacy.tombstones import Hasher, load_key
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.senders.base import Sender

__all__ = ["Forgetter", "build_forgetter"]


def build_forgetter(settings: Settings, engine: Engine, sender: Sender | None,
                    business: Engine | None) -> Forgetter:
    """A Forgetter over the configured state, sender and business database."""
    from klaviyo_sync.business.customers import Customer, SqlCustomerReader

    reader = SqlCustomerReader(business, settings.business) if business is not None else None

    def find(emails: set[str], ids: set[str]) -> list[Customer]:
        assert reader is not None
        return [*reader.by_email(emails), *reader.lookup(ids).values()]

    def hasher(create: bool) -> Hasher:
        return Hasher(load_key(settings.privacy.key_file, engine, create=create))

    outbox = Path(settings.sender.outbox) if settings.sender.kind == "dry-run" else None
    return Forgetter(engine, QueueStore(engine), hasher, sender,
                     find if reader is not None else None, outbox)
