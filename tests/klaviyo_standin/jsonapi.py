"""JSON:API plumbing shared by the endpoints: the request as handlers see it, and replies."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.klaviyo_standin.server import KlaviyoStandIn

MEDIA_TYPE = "application/vnd.api+json"

_TITLES = {
    400: ("invalid", "Invalid input."),
    401: ("not_authenticated", "Authentication credentials were not provided."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    411: ("length_required", "Length required."),
    413: ("payload_too_large", "Payload too large."),
    415: ("unsupported_media_type", "Unsupported media type."),
    429: ("throttled", "Request was throttled."),
    500: ("error", "A server error occurred."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "Service unavailable."),
    504: ("gateway_timeout", "Gateway timeout."),
}


@dataclass
class Call:
    """One API request as an endpoint sees it."""

    standin: KlaviyoStandIn
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    now: datetime
    path_args: tuple[str, ...] = ()
    document: Any = None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class Reply:
    """What to answer; ``drop`` closes the connection without answering."""

    status: int
    body: Any = None  # a JSON-able document, or None for no body
    headers: dict[str, str] = field(default_factory=dict)
    items: int = 0
    error_codes: tuple[str, ...] = ()
    drop: bool = False
    content_type: str = MEDIA_TYPE

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode("utf-8")


def error(status: int, detail: str, *, code: str | None = None, title: str | None = None,
          pointer: str | None = None, parameter: str | None = None, items: int = 0) -> Reply:
    """A JSON:API error reply with one error."""
    return errors(status, [(detail, pointer, parameter)], code=code, title=title, items=items)


def errors(status: int, problems: Sequence[tuple[str, str | None, str | None]], *,
           code: str | None = None, title: str | None = None, items: int = 0) -> Reply:
    """A JSON:API error reply: one error per (detail, pointer, parameter)."""
    default_code, default_title = _TITLES.get(status, ("error", "Error."))
    code, title = code or default_code, title or default_title
    body = []
    for detail, pointer, parameter in problems:
        item: dict[str, Any] = {"id": str(uuid.uuid4()), "status": status, "code": code,
                                "title": title, "detail": detail}
        if pointer is not None:
            item["source"] = {"pointer": pointer}
        elif parameter is not None:
            item["source"] = {"parameter": parameter}
        body.append(item)
    return Reply(status, {"errors": body}, items=items, error_codes=(code,) * len(body))
