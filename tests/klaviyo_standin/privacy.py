"""POST /api/data-privacy-deletion-jobs: erase every profile an identifier names.

Klaviyo deletes asynchronously; the stand-in deletes at once (the profiles, their events,
their consent and suppression records) and keeps the request so tests can count them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tests.klaviyo_standin import consent_schemas
from tests.klaviyo_standin.account import Account
from tests.klaviyo_standin.endpoints import _schema_errors
from tests.klaviyo_standin.jsonapi import Call, Reply, error

_PROFILE = "/data/attributes/profile/data"


@dataclass(frozen=True)
class DeletionRequest:
    """One accepted deletion request: which identifier, and what it erased."""

    kind: str  # "email" | "phone_number" | "id"
    value: str
    received_at: datetime
    profile_ids: tuple[str, ...]
    events_deleted: int


def request_deletion(call: Call) -> Reply:
    """Exactly one of email, phone_number or id; 202 with no body."""
    invalid = _schema_errors(call, consent_schemas.DELETION_VALIDATOR, 1)
    if invalid is not None:
        return invalid
    data = call.document["data"]["attributes"]["profile"]["data"]
    given = [(kind, value) for kind, value in (
        ("id", data.get("id")), ("email", data["attributes"].get("email")),
        ("phone_number", data["attributes"].get("phone_number"))) if value]
    if len(given) != 1:
        return error(400, "Give exactly one of email, phone_number or id, not "
                     f"{len(given)}.", pointer=_PROFILE, items=1)
    kind, value = given[0]
    account = call.standin.account
    with account.lock:
        matching = _matching(account, kind, value)
        events = sum(account.forget_profile(profile_id) for profile_id in matching)
        account.deletion_requests.append(DeletionRequest(kind, value, call.now,
                                                         tuple(matching), events))
    return Reply(202, items=1)


def _matching(account: Account, kind: str, value: str) -> list[str]:
    """Every profile the identifier names: the indexed one and any other holding it."""
    states = account.profile_state
    if kind == "id":
        return [value] if value in states else []
    wanted = value.lower() if kind == "email" else value
    found = [pid for pid, state in states.items()
             if (str(state.get(kind) or "").lower() if kind == "email"
                 else state.get(kind)) == wanted]
    indexed = account.profile_id_for(kind, value)
    if indexed is not None and indexed not in found:
        found.append(indexed)
    return found
