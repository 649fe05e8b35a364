"""Credentials for Klaviyo: a private API key, or an OAuth app's rotating tokens.

OAuth refresh tokens rotate: the token endpoint may hand back a new refresh token and
invalidate the old one, so the new one is written to the state database (one UPSERT, one
transaction) before the access token that came with it is used; a crash after that write
loses nothing, a crash before it loses only an access token.

The design promises that credentials never appear in the database in clear, so the stored
token is sealed with AES-256-GCM (the `cryptography` package) under a key derived with
HKDF-SHA256 from the OAuth client secret, which lives only in the environment (or a
systemd credential), never in the database: the client secret is the key source. A stolen
database (or backup) without the client secret reveals nothing, and a tampered value is
refused. A token sealed by version 0.1.0 (an HMAC-SHA256 keystream) is still opened,
once, and sealed again the new way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from requests.adapters import HTTPAdapter
from sqlalchemy.engine import Engine

from klaviyo_sync.exceptions import AuthError, ConfigError, RetryableSendError
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.senders.deadline import DeadlineAdapter, request_within
from klaviyo_sync.state import meta

log = get_logger(__name__)

_VERSION = "ks2"
_LEGACY_VERSION = b"ks1"
#: Bound into every seal, so a ciphertext made for another purpose is refused.
_AAD = b"klaviyo-sync oauth refresh token"
#: Refresh this long before the access token expires, so no request meets an expired one.
REFRESH_MARGIN_S = 120.0


class Credentials(Protocol):
    def authorization(self) -> str:
        """The value of the Authorization header for the next request."""
        ...

    def refresh_after_401(self) -> bool:
        """Called once on a 401: True if new credentials are worth one more try."""
        ...


class ApiKeyAuth:
    """A private key: ``Authorization: Klaviyo-API-Key pk_...``."""

    def __init__(self, api_key: str) -> None:
        if not api_key:
            raise ConfigError("no Klaviyo API key (set the variable named by "
                              "klaviyo.api_key_env, or klaviyo.api_key_file)")
        self._header = f"Klaviyo-API-Key {api_key}"

    def authorization(self) -> str:
        return self._header

    def refresh_after_401(self) -> bool:
        return False  # a private key cannot be renewed by us

    def __repr__(self) -> str:
        return "ApiKeyAuth(***)"


class TokenSeal:
    """Encrypts and authenticates a token with a key derived from a secret (see module doc)."""

    def __init__(self, secret: str) -> None:
        self.key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                        info=b"klaviyo-sync token seal v2").derive(secret.encode())
        self._aead = AESGCM(self.key)
        # The origin fingerprint (and the old seal) use keys derived as before, so a
        # stored record keeps matching the configured token across the upgrade.
        root = hashlib.sha256(b"klaviyo-sync token seal|" + secret.encode()).digest()
        self._legacy_enc = hmac.new(root, b"encrypt", hashlib.sha256).digest()
        self._mac = hmac.new(root, b"authenticate", hashlib.sha256).digest()

    def seal(self, plaintext: str) -> str:
        nonce = secrets.token_bytes(12)
        ct = self._aead.encrypt(nonce, plaintext.encode(), _AAD)
        return f"{_VERSION}:" + base64.urlsafe_b64encode(nonce + ct).decode()

    def open(self, sealed: str) -> str | None:
        """The plaintext, or None if the value was sealed with another secret or altered."""
        version, sep, body = sealed.partition(":")
        if not sep:
            return self._open_legacy(sealed)
        if version != _VERSION:
            return None
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return self._aead.decrypt(raw[:12], raw[12:], _AAD).decode()
        except (ValueError, InvalidTag):
            return None

    @staticmethod
    def is_legacy(sealed: str) -> bool:
        """True for a value sealed before 0.1.1, which should be sealed again."""
        return ":" not in sealed

    def _open_legacy(self, sealed: str) -> str | None:
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
        except ValueError:
            return None
        if len(raw) < 3 + 16 + 32 or not raw.startswith(_LEGACY_VERSION):
            return None
        nonce, ct, tag = raw[3:19], raw[19:-32], raw[-32:]
        want = hmac.new(self._mac, _LEGACY_VERSION + nonce + ct, hashlib.sha256).digest()
        if not hmac.compare_digest(tag, want):
            return None
        stream = b"".join(hmac.new(self._legacy_enc, nonce + i.to_bytes(8, "big"),
                                   hashlib.sha256).digest()
                          for i in range((len(ct) + 31) // 32))
        return bytes(a ^ b for a, b in zip(ct, stream, strict=False)).decode()

    def fingerprint(self, value: str) -> str:
        """A keyed hash: tells whether the configured token changed, without storing it."""
        return hmac.new(self._mac, b"origin|" + value.encode(), hashlib.sha256).hexdigest()[:32]


class OAuthAuth:
    """Bearer tokens from the refresh-token grant, refreshed before they expire."""

    def __init__(self, session: requests.Session, token_url: str, client_id: str,
                 client_secret: str, refresh_token: str, engine: Engine | None,
                 timeout_s: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        if not (client_id and client_secret and refresh_token):
            raise ConfigError("klaviyo.auth = \"oauth\" needs a client id, a client secret "
                              "and a refresh token in the environment variables named by "
                              "klaviyo.oauth_*_env")
        self.session = session
        if type(session.get_adapter(token_url)) is HTTPAdapter:
            # requests' default transport: the deadline cuts only connections it can see
            # (KlaviyoClient mounts the same adapter; a transport of one's own is kept).
            session.mount(token_url, DeadlineAdapter(max_retries=0))
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._configured = refresh_token
        self.engine = engine
        self.timeout_s = timeout_s
        self.clock = clock
        self.seal = TokenSeal(client_secret)
        self._lock = threading.Lock()
        self._access: str | None = None
        self._expires_at = 0.0
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"OAuthAuth(client_id={self.client_id!r}, ***)"

    # --- the refresh token's home: the state database, sealed --------------------------

    def stored_refresh_token(self) -> str:
        """The newest refresh token: the stored rotated one, unless the configured one was
        replaced since (an operator re-installed the app)."""
        if self.engine is None:
            return self._configured
        record = meta.get_json(self.engine, meta.OAUTH_REFRESH_TOKEN)
        if not isinstance(record, dict):
            return self._configured
        if record.get("origin") != self.seal.fingerprint(self._configured):
            return self._configured
        sealed = str(record.get("token", ""))
        token = self.seal.open(sealed)
        if token is None:
            log.warning("oauth_stored_token_unreadable",
                        reason="sealed with another client secret or altered")
            return self._configured
        if self.seal.is_legacy(sealed):
            self._persist(token)
            log.info("oauth_stored_token_resealed", cipher="AES-256-GCM")
        return token

    def _persist(self, refresh_token: str) -> None:
        if self.engine is None:
            self._configured = refresh_token
            return
        meta.put_json(self.engine, meta.OAUTH_REFRESH_TOKEN, {
            "origin": self.seal.fingerprint(self._configured),
            "token": self.seal.seal(refresh_token),
        })

    # --- Credentials --------------------------------------------------------------------

    def authorization(self) -> str:
        with self._lock:
            if self._access is None or self.clock() >= self._expires_at - REFRESH_MARGIN_S:
                self._refresh()
            return f"Bearer {self._access}"

    def refresh_after_401(self) -> bool:
        with self._lock:
            self._refresh()
            return True

    def _refresh(self) -> None:
        token = self.stored_refresh_token()
        answer = self._grant(token)
        if answer is None:
            # Another process sharing the state database may have rotated the token a
            # moment ago; its new token is the one Klaviyo now expects.
            newer = self.stored_refresh_token()
            answer = self._grant(newer) if newer != token else None
            if answer is None:
                raise AuthError("Klaviyo refused the OAuth refresh token (invalid_grant): "
                                "install the app again and set a new refresh token")
            token = newer
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != token:
            self._persist(rotated)  # before the access token is used: see module doc
        self._access = str(answer["access_token"])
        self._expires_at = self.clock() + float(answer.get("expires_in") or 3600)
        self.refreshes += 1
        log.info("oauth_token_refreshed", rotated=bool(rotated and rotated != token))

    def _grant(self, refresh_token: str) -> dict[str, Any] | None:
        try:
            resp = request_within(
                self.session, self.timeout_s, "POST", self.token_url,
                auth=(self.client_id, self._secret),
                data={"grant_type": "refresh_token", "refresh_token": refresh_token})
        except requests.RequestException as exc:
            raise RetryableSendError(f"OAuth token endpoint unreachable: "
                                     f"{type(exc).__name__}") from exc
        if resp.status_code >= 500 or resp.status_code == 429:
            raise RetryableSendError(f"OAuth token endpoint answered {resp.status_code}")
        if resp.status_code in (400, 401):
            return None
        if resp.status_code != 200:
            raise AuthError(f"OAuth token endpoint answered {resp.status_code}",
                            resp.status_code)
        try:
            body = resp.json()
            _ = body["access_token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RetryableSendError("OAuth token endpoint sent an unreadable answer") from exc
        return dict(body)

