"""Delivery to Klaviyo: the client, its pacing and auth, the dry-run sender, the runner.

The sender ``[sender] kind`` names is built by :class:`klaviyo_sync.app.App`.
"""

from __future__ import annotations

import os
import socket

from klaviyo_sync.config import Settings
from klaviyo_sync.senders.base import AuthFailure, DeliveryReport, OutgoingEvent, Sender
from klaviyo_sync.senders.batching import BatchCaps

__all__ = ["AuthFailure", "DeliveryReport", "OutgoingEvent", "Sender", "caps_of",
           "default_worker_id"]


def default_worker_id() -> str:
    """``hostname:pid``: unique among the runners sharing one queue."""
    return f"{socket.gethostname()}:{os.getpid()}"


def caps_of(settings: Settings) -> BatchCaps:
    """The batch caps ``[sender]`` sets."""
    s = settings.sender
    return BatchCaps(max_events=s.batch_max_events, max_bytes=s.batch_max_bytes,
                     single_threshold=s.single_threshold)
