"""OAuth for the stand-in: the refresh-token grant of ``POST /oauth/token``, and Bearer checks.

Each refresh rotates the refresh token (the old one stops working at once), as Klaviyo may,
so a client that does not persist the new one before using it is caught out.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qs

from tests.klaviyo_standin import clock


def _seconds(value: float) -> float | int:
    # Whole seconds as Klaviyo sends them; a test's sub-second lifetime stays exact.
    return int(value) if value == int(value) else value


class TokenState(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class TokenAnswer:
    """The status and JSON body of a token endpoint answer (RFC 6749 section 5)."""

    status: int
    body: dict[str, object]


class OAuthServer:
    """Issues and checks tokens for the configured clients (client id -> secret)."""

    def __init__(self, clients: Mapping[str, str], access_token_ttl_s: float) -> None:
        self.clients = dict(clients)
        self.access_token_ttl_s = access_token_ttl_s
        self._lock = threading.Lock()
        self._access: dict[str, tuple[str, float]] = {}  # token -> (client id, expires at)
        self._refresh: dict[str, str] = {}  # token -> client id
        self.refresh_count = 0

    def issue(self, client_id: str) -> dict[str, object]:
        """Tokens as an app installation would get them (how a test obtains its first pair)."""
        if client_id not in self.clients:
            raise KeyError(f"unknown OAuth client {client_id!r}")
        with self._lock:
            return self._issue(client_id)

    def _issue(self, client_id: str) -> dict[str, object]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self._access[access] = (client_id, clock.monotonic() + self.access_token_ttl_s)
        self._refresh[refresh] = client_id
        return {"access_token": access, "token_type": "Bearer",
                "expires_in": _seconds(self.access_token_ttl_s), "refresh_token": refresh,
                "scope": "events:read events:write metrics:read profiles:read "
                         "profiles:write subscriptions:write"}

    def check_bearer(self, token: str) -> tuple[TokenState, str | None]:
        """Whether an access token is valid, and for which client (its rate-limit quota)."""
        with self._lock:
            found = self._access.get(token)
        if found is None:
            return TokenState.UNKNOWN, None
        client_id, expires_at = found
        if clock.monotonic() >= expires_at:
            return TokenState.EXPIRED, client_id
        return TokenState.VALID, client_id

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (to test refresh on 401)."""
        with self._lock:
            for token, (client_id, _) in list(self._access.items()):
                self._access[token] = (client_id, 0.0)

    def token_endpoint(self, authorization: str | None, body: bytes) -> TokenAnswer:
        """Answer ``POST /oauth/token`` (client credentials in HTTP basic auth)."""
        client_id = self._client(authorization)
        if client_id is None:
            return TokenAnswer(401, {"error": "invalid_client",
                                     "error_description": "Client authentication failed."})
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "refresh_token":
            return TokenAnswer(400, {"error": "unsupported_grant_type",
                                     "error_description": "Only refresh_token is supported."})
        token = form.get("refresh_token")
        if not token:
            return TokenAnswer(400, {"error": "invalid_request",
                                     "error_description": "refresh_token is required."})
        with self._lock:
            if self._refresh.get(token) != client_id:
                return TokenAnswer(400, {"error": "invalid_grant",
                                         "error_description": "Invalid refresh token."})
            del self._refresh[token]  # rotation: the old refresh token is spent
            self.refresh_count += 1
            return TokenAnswer(200, self._issue(client_id))

    def _client(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, _, secret = decoded.partition(":")
        expected = self.clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected, secret):
            return None
        return client_id
