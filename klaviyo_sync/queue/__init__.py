"""The database-backed event queue: idempotent enqueue, leased claims, retry, dead letters."""

from klaviyo_sync.queue.models import EventState, NewEvent, QueuedEvent
from klaviyo_sync.queue.retry import RetryPolicy
from klaviyo_sync.queue.store import QueueStore

__all__ = ["EventState", "NewEvent", "QueueStore", "QueuedEvent", "RetryPolicy"]
