"""The seam through which suppression rides along with sending (see business/)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.engine import Engine

from klaviyo_sync.business.customers import Customer
from klaviyo_sync.config import Settings

if TYPE_CHECKING:
    from klaviyo_sync.senders.base import Sender


class SuppressionHook(Protocol):
    def observe(self, customers: Iterable[Customer]) -> int:
        """Record who must be suppressed (idempotent)."""
        ...

    def flush(self, sender: Sender) -> int:
        """Send the pending suppressions; returns how many emails went."""
        ...


def load_suppression_hook(settings: Settings, engine: Engine) -> SuppressionHook | None:
    """The business package's suppressor, if this build has one (and settings enable it)."""
    try:
        from klaviyo_sync.business.suppression import (
            build_suppressor,
        )
    except ImportError:
        return None
    hook: SuppressionHook | None = build_suppressor(settings, engine)
    return hook
