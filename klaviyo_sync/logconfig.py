"""structlog, configured once: JSON lines off a terminal (journald), console on one.

Two processors guard what reaches a log line: emails are masked at info level and above
(``logging.mask_emails``), and anything that looks like a Klaviyo credential is replaced
whatever the level.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_SECRET = re.compile(r"\b(pk_[A-Za-z0-9]{6,}|Klaviyo-API-Key\s+\S+|Bearer\s+\S+)")
_SECRET_KEYS = {"api_key", "authorization", "access_token", "refresh_token", "client_secret",
                "password", "token"}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def mask_email(text: str) -> str:
    """'jane.doe@example.com' -> 'j***@example.com' (the domain helps support, the rest is PII)."""
    return _EMAIL.sub(r"\1***@\2", text)


def _scrub(value: Any, mask: bool) -> Any:
    if isinstance(value, str):
        value = _SECRET.sub("***", value)
        return mask_email(value) if mask else value
    if isinstance(value, dict):
        return {k: ("***" if str(k).lower() in _SECRET_KEYS else _scrub(v, mask))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, mask) for v in value]
    return value


class Redactor:
    """A structlog processor that hides secrets always and emails at info and above."""

    def __init__(self, mask_emails: bool) -> None:
        self.mask_emails = mask_emails

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        mask = self.mask_emails and method not in ("debug",)
        for key in list(event_dict):
            if key.lower() in _SECRET_KEYS:
                event_dict[key] = "***"
            else:
                event_dict[key] = _scrub(event_dict[key], mask)
        return event_dict


def configure(level: str = "info", fmt: str = "auto", mask_emails: bool = True,
              stream: TextIO | None = None) -> None:
    """Configure structlog (and the stdlib root logger, for libraries) for this process."""
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (structlog.processors.JSONRenderer() if as_json
                     else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            Redactor(mask_emails),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if as_json else _passthrough,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(_LEVELS[level], logging.WARNING), stream=stream, force=True)


def _passthrough(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
    return event_dict


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
