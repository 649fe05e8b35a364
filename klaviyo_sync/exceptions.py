"""The project's exception hierarchy: one root, one branch per stage.

Whether a failure is retried or given up on is decided by its type (see `senders/`),
and library exceptions are converted at the boundary with ``raise ... from exc`` so the
rest of the code only catches these.
"""

from __future__ import annotations

from typing import Any


class KlaviyoSyncError(Exception):
    """Root of every error this package raises on purpose."""

    #: The process exit code the CLI uses when this error reaches the top.
    exit_code = 1


class ConfigError(KlaviyoSyncError):
    """Settings are missing, unreadable or invalid; the message names the file and key."""

    exit_code = 2


class StateError(KlaviyoSyncError):
    """The state database is unreachable, unwritable or at the wrong schema version."""

    exit_code = 3


class SchemaOutdatedError(StateError):
    """The state database needs `klaviyo-sync db upgrade`."""


class ParseError(KlaviyoSyncError):
    """A log line of a synced event type could not be turned into an event."""

    def __init__(self, message: str, event_type: str | None = None) -> None:
        super().__init__(message)
        #: The line's event type, when it could be read (the rejects table records it).
        self.event_type = event_type


class LogSourceError(KlaviyoSyncError):
    """The business log cannot be read (missing, unreadable)."""

    exit_code = 4


class QueueError(KlaviyoSyncError):
    """A queue operation was refused (unknown id, bad state transition)."""


class BusinessDataError(KlaviyoSyncError):
    """The business database cannot be read or does not have the expected shape."""

    exit_code = 5


class SendError(KlaviyoSyncError):
    """Delivering to Klaviyo failed."""

    exit_code = 6


class RetryableSendError(SendError):
    """Temporary: 5xx, timeout, dropped connection. Retry with backoff."""


class RateLimitedError(RetryableSendError):
    """429: wait ``retry_after_s`` and send again; not a failed attempt."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RejectedSendError(SendError):
    """Permanent: Klaviyo refused the payload (400). Never resend the same bytes."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        #: Klaviyo's JSON:API error objects (code, detail, source.pointer), if any.
        self.errors = errors or []
        self.status = status


class PayloadTooLargeError(RejectedSendError):
    """413: the body is over Klaviyo's size cap. Split it and send the halves."""


class AuthError(SendError):
    """401/403: credentials bad, revoked or lacking scope. Stop sending, keep the queue."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status Klaviyo (or its token endpoint) answered, when there was one.
        self.status = status
