"""The database-backed event queue: idempotent enqueue, leased claims, retry, dead letters.

``QueueStore`` is the face the rest of klaviyo-sync uses; the drivers under
``queue/drivers/`` (SQLite, PostgreSQL, in-memory) are what it runs on.
"""

from klaviyo_sync.queue.driver import QueueDriver, SignupAttempts
from klaviyo_sync.queue.drivers import MemoryDriver, driver_for, write_transaction
from klaviyo_sync.queue.models import EventState, NewEvent, QueuedEvent
from klaviyo_sync.queue.retry import RetryPolicy
from klaviyo_sync.queue.store import QueueStore

__all__ = ["EventState", "MemoryDriver", "NewEvent", "QueueDriver", "QueueStore",
           "QueuedEvent", "RetryPolicy", "SignupAttempts", "driver_for", "write_transaction"]
