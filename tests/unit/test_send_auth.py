"""Credentials: the token seal, OAuth refresh and rotation, on a fake token endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import sqlalchemy as sa
from requests.adapters import BaseAdapter

from klaviyo_sync.exceptions import AuthError, ConfigError
from klaviyo_sync.senders.auth import ApiKeyAuth, OAuthAuth, TokenSeal
from klaviyo_sync.state import meta
from klaviyo_sync.state.db import open_state

TOKEN_URL = "http://127.0.0.1:9/oauth/token"


class FakeTokenEndpoint(BaseAdapter):
    """A tiny transport: answers the refresh-token grant, rotating refresh tokens."""

    def __init__(self, valid: str, engine: sa.Engine | None = None) -> None:
        super().__init__()
        self.valid = valid
        self.engine = engine
        self.grants: list[str] = []
        self.stored_at_issue: list[Any] = []
        self.n = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        form = {k: v[0] for k, v in parse_qs(str(request.body)).items()}
        self.grants.append(form["refresh_token"])
        resp = requests.Response()
        resp.request = request
        assert request.headers["Authorization"].startswith("Basic ")
        if form.get("grant_type") != "refresh_token" or form["refresh_token"] != self.valid:
            resp.status_code = 400
            resp._content = b'{"error": "invalid_grant"}'
            return resp
        self.n += 1
        self.valid = f"rt-{self.n}"
        resp.status_code = 200
        resp._content = json.dumps({"access_token": f"at-{self.n}", "expires_in": 3600,
                                     "refresh_token": self.valid}).encode()
        return resp

    def close(self) -> None:
        pass


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return open_state(f"sqlite:///{tmp_path / 'state.db'}")


def oauth(engine: sa.Engine | None, fake: FakeTokenEndpoint, clock: list[float],
          initial: str = "rt-0") -> OAuthAuth:
    session = requests.Session()
    session.mount("http://", fake)
    return OAuthAuth(session, TOKEN_URL, "client", "s3cret", initial, engine,
                     clock=lambda: clock[0])


def test_seal_round_trips_and_refuses_tampering_and_other_secrets() -> None:
    seal = TokenSeal("secret-a")
    sealed = seal.seal("refresh-token-value")
    assert "refresh-token-value" not in sealed
    assert seal.open(sealed) == "refresh-token-value"
    assert TokenSeal("secret-b").open(sealed) is None
    raw = bytearray(sealed.encode())
    raw[10] = ord("A") if raw[10] != ord("A") else ord("B")
    assert seal.open(raw.decode()) is None
    assert seal.seal("x") != seal.seal("x")  # a fresh nonce each time


def test_api_key_header_and_no_key_is_a_config_error() -> None:
    assert ApiKeyAuth("pk_abc").authorization() == "Klaviyo-API-Key pk_abc"
    assert "pk_abc" not in repr(ApiKeyAuth("pk_abc"))
    with pytest.raises(ConfigError):
        ApiKeyAuth("")


def test_rotated_refresh_token_is_stored_sealed_and_used_next(engine: sa.Engine) -> None:
    fake = FakeTokenEndpoint("rt-0")
    clock = [0.0]
    auth = oauth(engine, fake, clock)
    assert auth.authorization() == "Bearer at-1"
    stored = meta.get(engine, meta.OAUTH_REFRESH_TOKEN)
    assert stored is not None and "rt-1" not in stored
    assert auth.authorization() == "Bearer at-1"  # still fresh: no second grant
    clock[0] = 3600 - 60  # inside the refresh margin
    assert auth.authorization() == "Bearer at-2"
    assert fake.grants == ["rt-0", "rt-1"]
    # A new process (same configured initial token) starts from the stored, rotated one.
    again = oauth(engine, fake, clock)
    assert again.authorization() == "Bearer at-3"
    assert fake.grants[-1] == "rt-2"


def test_a_401_refreshes_once(engine: sa.Engine) -> None:
    fake = FakeTokenEndpoint("rt-0")
    auth = oauth(engine, fake, [0.0])
    auth.authorization()
    assert auth.refresh_after_401() is True
    assert auth.authorization() == "Bearer at-2"


def test_a_revoked_refresh_token_is_an_auth_error(engine: sa.Engine) -> None:
    fake = FakeTokenEndpoint("something-else")
    with pytest.raises(AuthError):
        oauth(engine, fake, [0.0]).authorization()


def test_a_new_configured_token_wins_over_a_stored_one(engine: sa.Engine) -> None:
    fake = FakeTokenEndpoint("rt-0")
    oauth(engine, fake, [0.0]).authorization()  # stores rt-1
    fake.valid = "fresh-install"
    auth = oauth(engine, fake, [0.0], initial="fresh-install")
    assert auth.authorization().startswith("Bearer at-")
    assert fake.grants[-1] == "fresh-install"


def legacy_seal(secret: str, plaintext: str) -> str:
    """A token sealed as versions before 0.1.1 did (HMAC-SHA256 keystream, then a MAC)."""
    import base64
    import hashlib
    import hmac

    root = hashlib.sha256(b"klaviyo-sync token seal|" + secret.encode()).digest()
    enc = hmac.new(root, b"encrypt", hashlib.sha256).digest()
    mac = hmac.new(root, b"authenticate", hashlib.sha256).digest()
    nonce, data = b"\x01" * 16, plaintext.encode()
    stream = b"".join(hmac.new(enc, nonce + i.to_bytes(8, "big"), hashlib.sha256).digest()
                      for i in range((len(data) + 31) // 32))
    ct = bytes(a ^ b for a, b in zip(data, stream, strict=False))
    tag = hmac.new(mac, b"ks1" + nonce + ct, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(b"ks1" + nonce + ct + tag).decode()


def test_the_seal_is_aes_gcm_under_a_key_derived_from_the_client_secret() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    seal = TokenSeal("secret-a")
    sealed = seal.seal("refresh-token-value")
    version, _, body = sealed.partition(":")
    assert version == "ks2"
    import base64

    raw = base64.urlsafe_b64decode(body)
    nonce, ct = raw[:12], raw[12:]
    assert AESGCM(seal.key).decrypt(nonce, ct, b"klaviyo-sync oauth refresh token") \
        == b"refresh-token-value"


def test_a_token_sealed_the_old_way_is_read_once_and_sealed_again(engine: sa.Engine) -> None:
    fake = FakeTokenEndpoint("rt-7")
    auth = oauth(engine, fake, [0.0])
    meta.put_json(engine, meta.OAUTH_REFRESH_TOKEN, {
        "origin": auth.seal.fingerprint("rt-0"), "token": legacy_seal("s3cret", "rt-7")})
    assert auth.stored_refresh_token() == "rt-7"
    record = meta.get_json(engine, meta.OAUTH_REFRESH_TOKEN)
    assert isinstance(record, dict) and str(record["token"]).startswith("ks2:")
    assert auth.stored_refresh_token() == "rt-7"
    assert auth.authorization() == "Bearer at-1" and fake.grants == ["rt-7"]
