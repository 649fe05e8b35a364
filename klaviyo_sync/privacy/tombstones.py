"""Tombstones of forgotten people: keyed hashes, never the clear values.

An erasure must outlive the data it erased: a replay of an old log, an order that changes
later, or a suppression would otherwise bring the person back into Klaviyo. So each
request leaves a row in ``erasures`` holding an HMAC-SHA256 of the person's email
(lower-cased, trimmed) and of their customer id, under a key that is not in the
database when ``[privacy] key_file`` is set (see :func:`load_key`). Matching an event
against the tombstones costs two HMACs, and nothing at all while there are none.

The documented choice on people who come back: a tombstone covers everything that
happened up to the request. An event that happened *after* it, for a customer the
business database shows with a status that is not in ``[privacy] erase_statuses``, is
the start of a new relationship and is sent; the tombstone is then marked lifted.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.clock import utcnow
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.state import meta
from klaviyo_sync.state.schema import erasures

#: meta name of the generated key, used only when no key file is configured.
KEY_META = "privacy_hash_key"


class ErasureState(enum.StrEnum):
    REQUESTED = "requested"  # recorded; local erasure not yet committed
    ERASED = "erased"  # our copies are gone; Klaviyo not yet asked (or it failed)
    DONE = "done"  # Klaviyo accepted the deletion job (or had no such profile)


def normal_email(email: str) -> str:
    return email.strip().lower()


def load_key(key_file: str, engine: Engine, create: bool = True) -> bytes:
    """The HMAC key: from ``key_file`` (created 0600 with 32 random bytes when missing),
    or, when no file is configured, a random key kept in the state database's meta table
    (a dump of the database then holds key and hashes together: set a key file to keep
    them apart). Two processes creating it at once end with the same key."""
    if key_file:
        path = Path(key_file)
        try:
            data = path.read_bytes().strip()
        except FileNotFoundError:
            if not create:
                raise ConfigError(f"privacy.key_file: {path} does not exist") from None
            data = _create_key_file(path)
        except OSError as exc:
            raise ConfigError(f"privacy.key_file: cannot read {path}: {exc.strerror}") from exc
        if len(data) < 32:
            raise ConfigError(f"privacy.key_file: {path} holds fewer than 32 bytes")
        return data
    stored = meta.get(engine, KEY_META)
    if stored is None:
        if not create:
            return b""
        # Insert-if-absent: a second process creating a key at the same moment must not
        # replace the one the first has already hashed with.
        stored = meta.put_if_absent(engine, KEY_META, secrets.token_hex(32))
    return stored.encode()


def _create_key_file(path: Path) -> bytes:
    """Write a new key beside ``path`` and link it into place: the file appears whole or
    not at all (a kill while writing left an empty key file before, which every later
    run refused), and when another process links first, its key is the one used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_hex(32).encode()
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return path.read_bytes().strip()
        _fsync_dir(path.parent)
        return data
    except OSError as exc:
        raise ConfigError(f"privacy.key_file: cannot create {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Hasher:
    key: bytes

    def email(self, email: str | None) -> str | None:
        return self._hash("email", normal_email(email)) if email and email.strip() else None

    def customer(self, customer_id: Any) -> str | None:
        text = "" if customer_id is None else str(customer_id).strip()
        return self._hash("customer", text) if text else None

    def _hash(self, kind: str, value: str) -> str:
        return hmac.new(self.key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Tombstone:
    id: int
    requested_at: datetime
    email_hash: str | None
    customer_hash: str | None
    lifted_at: datetime | None


class Tombstones:
    """The live tombstones in memory, for the runner's per-batch check."""

    def __init__(self, hasher: Hasher, rows: Iterable[Tombstone]) -> None:
        self.hasher = hasher
        self._by_hash: dict[str, Tombstone] = {}
        for row in rows:
            if row.lifted_at is not None:
                continue
            for digest in (row.email_hash, row.customer_hash):
                if digest:
                    self._by_hash[digest] = row

    def __bool__(self) -> bool:
        return bool(self._by_hash)

    def match(self, email: str | None, customer_id: Any) -> Tombstone | None:
        """The tombstone covering this email or customer id, if any."""
        if not self._by_hash:
            return None
        for digest in (self.hasher.customer(customer_id), self.hasher.email(email)):
            if digest and digest in self._by_hash:
                return self._by_hash[digest]
        return None


def load_tombstones(engine: Engine, hasher: Hasher) -> Tombstones:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(
            erasures.c.id, erasures.c.asked_by, erasures.c.requested_at,
            erasures.c.email_hash, erasures.c.customer_hash, erasures.c.lifted_at)).fetchall()
    lifted = {row[0]: row[5] for row in rows}
    # A row that links a further identifier counts (and is lifted) with its request's.
    return Tombstones(hasher, (
        Tombstone(primary, at, email_hash, customer_hash, lifted.get(primary, lifted_at))
        for row_id, asked_by, at, email_hash, customer_hash, lifted_at in rows
        for primary in [int(asked_by[5:]) if asked_by.startswith("link:") else row_id]))


NO_TOMBSTONES = Tombstones(Hasher(b""), ())


def tombstone_source(engine: Engine, key_file: str) -> Callable[[], Tombstones]:
    """What the runner and the suppressor call before each pass: the live tombstones,
    read fresh (a `forget` in another process takes effect at the next pass)."""

    def load() -> Tombstones:
        key = load_key(key_file, engine, create=False) if not key_file or \
            Path(key_file).exists() else b""
        if not key:
            return NO_TOMBSTONES  # no erasure was ever made: nothing to check
        return load_tombstones(engine, Hasher(key))

    return load


def count_skipped(conn: Connection, counts: dict[int, int]) -> None:
    """Add events not sent because of each tombstone (by erasure id)."""
    for erasure_id, n in counts.items():
        conn.execute(erasures.update().where(erasures.c.id == erasure_id)
                     .values(skipped=erasures.c.skipped + n))


def lift(conn: Connection, erasure_id: int, now: datetime | None = None) -> None:
    conn.execute(erasures.update().where(erasures.c.id == erasure_id,
                                         erasures.c.lifted_at.is_(None))
                 .values(lifted_at=now or utcnow()))
