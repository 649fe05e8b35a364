"""The seam through which suppression rides along with sending (see business/)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from klaviyo_sync.business.customers import Customer

if TYPE_CHECKING:
    from klaviyo_sync.senders.base import Sender


class SuppressionHook(Protocol):
    """What the runner needs of the suppressor (business/suppression.py's Suppressor);
    :class:`klaviyo_sync.app.App` passes None when suppression is switched off."""

    def observe(self, customers: Iterable[Customer]) -> int:
        """Record who must be suppressed (idempotent)."""
        ...

    def flush(self, sender: Sender) -> int:
        """Send the pending suppressions; returns how many emails went."""
        ...
