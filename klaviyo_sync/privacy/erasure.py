"""Removing one person from our own state: every table that holds their data, and the
dry-run outbox.

What is personal here, and what becomes of it:

- ``events``: every row whose email or customer id is theirs is deleted, whatever its
  state (pending ones are thereby cancelled; sent ones still hold names and properties);
- ``rejects``: a rejected line that names their email or customer id keeps its row (so
  a replay does not file the line again: rows are keyed by the line's hash) but its raw
  bytes are replaced and its reason says why;
- ``suppressions``: their row is deleted (Klaviyo deletes the profile; the tombstone keeps
  us from suppressing, and so re-creating, it);
- ``order_sync``: the customer id is blanked; the order ids stay, so that the order
  tracker does not turn those orders into events again;
- ``profile_sync``: their row (digest of the profile last imported) is deleted; the
  tombstone keeps the profiles pass from importing them again;
- ``consent_sync`` and ``optouts``: their consent record and the opt-outs read back from
  Klaviyo are deleted (Klaviyo deletes its own copy with the profile);
- the outbox of the dry-run sender: request bodies that name them lose the items that do
  (a body of one event is dropped whole).

Counting (``--dry-run``) and erasing share the matching rules, so both print the same
figures.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state.schema import (
    consent_sync,
    optouts,
    order_sync,
    profile_sync,
    rejects,
    suppressions,
)

ERASED_RAW = b"[erased at the person's request]"


@dataclass
class Person:
    """Everything that identifies one person in our copies."""

    emails: set[str] = field(default_factory=set)  # lower-cased
    customer_ids: set[str] = field(default_factory=set)

    def add(self, email: str | None, customer_id: Any) -> None:
        if email and email.strip():
            self.emails.add(email.strip().lower())
        if customer_id is not None and str(customer_id).strip():
            self.customer_ids.add(str(customer_id).strip())

    def mentioned_in(self, text: bytes) -> bool:
        """Whether a raw line or body names this person (an email, or a customer id as
        the value of a customer key)."""
        lowered = text.lower()
        if any(email.encode() in lowered for email in self.emails):
            return True
        return any(_customer_pattern(c).search(text) for c in self.customer_ids)


def _customer_pattern(customer_id: str) -> re.Pattern[bytes]:
    ident = re.escape(customer_id.encode())
    # customer=1004, customer="1004", "customer": "1004", "customer_id":1004, external_id
    return re.compile(rb'(?:customer(?:_id)?|external_id)"?\s*[=:]\s*"?' + ident
                      + rb'(?![0-9A-Za-z_.-])')


def count_local(conn: Connection, store: QueueStore, person: Person) -> dict[str, int]:
    """What :func:`erase_local` would remove, by table."""
    emails, ids = sorted(person.emails), sorted(person.customer_ids)
    events = store.person_counts(conn, emails, ids)
    return {
        "events_pending": events.get("pending", 0) + events.get("leased", 0),
        "events_sent": events.get("sent", 0),
        "events_dead": events.get("dead", 0),
        "rejects": len(_reject_ids(conn, person)),
        "suppressions": _count(conn, suppressions, _by_person(suppressions, person)),
        "order_sync": _count(conn, order_sync, _order_where(person)),
        "profile_sync": _count(conn, profile_sync, _profile_where(person)),
        "consent_sync": _count(conn, consent_sync, _by_person(consent_sync, person)),
        "optouts": _count(conn, optouts, _by_person(optouts, person)),
    }


def erase_local(conn: Connection, store: QueueStore, person: Person) -> dict[str, int]:
    """Remove or blank the person's data in the caller's (erasing) transaction."""
    counts = count_local(conn, store, person)
    emails, ids = sorted(person.emails), sorted(person.customer_ids)
    store.erase_person(conn, emails, ids)
    reject_ids = _reject_ids(conn, person)
    if reject_ids:
        conn.execute(rejects.update().where(rejects.c.id.in_(reject_ids)).values(
            raw=ERASED_RAW, truncated=False,
            reason="erased at the person's request (klaviyo-sync forget)"))
    conn.execute(suppressions.delete().where(_by_person(suppressions, person)))
    conn.execute(order_sync.update().where(_order_where(person)).values(customer_id=None))
    conn.execute(profile_sync.delete().where(_profile_where(person)))
    conn.execute(consent_sync.delete().where(_by_person(consent_sync, person)))
    conn.execute(optouts.delete().where(_by_person(optouts, person)))
    return counts


def _count(conn: Connection, table: sa.Table, where: Any) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where))
               .scalar() or 0)


def _order_where(person: Person) -> Any:
    if not person.customer_ids:
        return sa.false()
    return order_sync.c.customer_id.in_(sorted(person.customer_ids))


def _by_person(table: sa.Table, person: Person) -> Any:
    """Rows of a table with ``email`` and ``customer_id`` columns that are this person's."""
    clauses = []
    if person.emails:
        clauses.append(sa.func.lower(table.c.email).in_(sorted(person.emails)))
    if person.customer_ids:
        clauses.append(table.c.customer_id.in_(sorted(person.customer_ids)))
    return sa.or_(*clauses) if clauses else sa.false()


def _profile_where(person: Person) -> Any:
    if not person.customer_ids:
        return sa.false()
    return profile_sync.c.customer_id.in_(sorted(person.customer_ids))


def _reject_ids(conn: Connection, person: Person) -> list[int]:
    # Rejects are few and their raw bytes are not indexed: scan them, in pages.
    found: list[int] = []
    last = 0
    while True:
        rows = conn.execute(sa.select(rejects.c.id, rejects.c.raw)
                            .where(rejects.c.id > last, rejects.c.raw != ERASED_RAW)
                            .order_by(rejects.c.id).limit(1000)).fetchall()
        if not rows:
            return found
        found += [row_id for row_id, raw in rows if person.mentioned_in(bytes(raw))]
        last = rows[-1][0]


# --- the dry-run outbox -------------------------------------------------------------------

def erase_outbox(path: Path, person: Person, dry_run: bool = False) -> int:
    """Remove the person from the outbox's request bodies; returns the lines changed.

    The file is rewritten beside itself and renamed over (0600), so a crash leaves either
    the old outbox or the new one.
    """
    if not path.exists():
        return 0
    changed = 0
    kept: list[bytes] = []
    with path.open("rb") as fh:
        for line in fh:
            if not person.mentioned_in(line):
                kept.append(line)
                continue
            changed += 1
            cleaned = _without_person(line, person)
            if cleaned is not None:
                kept.append(cleaned)
    if changed and not dry_run:
        _replace(path, kept)
    return changed


def _without_person(line: bytes, person: Person) -> bytes | None:
    """The line with every list item that names the person removed; None when nothing
    of the request is left (or it cannot be read)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    cleaned = _prune(record, person)
    if cleaned is None or person.mentioned_in(json.dumps(cleaned).encode()):
        return None
    return json.dumps(cleaned, separators=(",", ":")).encode() + b"\n"


def _prune(value: Any, person: Person) -> Any:
    if isinstance(value, list):
        items = [item for item in value
                 if not person.mentioned_in(json.dumps(item).encode())]
        return [_prune(item, person) for item in items] if items or not value else None
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            pruned = _prune(item, person)
            if pruned is None and item is not None:
                return None  # a list emptied of everything: the request is gone
            out[key] = pruned
        return out
    return value


def _replace(path: Path, lines: Sequence[bytes]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
