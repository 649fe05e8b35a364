"""The consent write endpoints: profile-subscription bulk jobs, adding profiles to a list.

Both answer 202 with no body, as Klaviyo does, and refuse a whole request (400, nothing
recorded) for any problem in it, the offending profile's pointer in the error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.klaviyo_standin import consent_schemas, schemas
from tests.klaviyo_standin.consent import ADDED_TO_LIST, FlowTrigger, Subscription, Unsubscription
from tests.klaviyo_standin.endpoints import _schema_errors
from tests.klaviyo_standin.jsonapi import Call, Reply, error

_PROFILES = "/data/attributes/profiles/data"
_CHANNELS = ("email", "sms")
_IDENTIFIER_OF = {"email": "email", "sms": "phone_number"}
METHOD = "API"


def _marketing(attributes: dict[str, Any], channel: str) -> dict[str, Any] | None:
    found = (attributes["subscriptions"].get(channel) or {}).get("marketing")
    return found if isinstance(found, dict) else None


def _list_id(call: Call) -> str | None:
    relationship = (call.document["data"].get("relationships") or {}).get("list")
    return relationship["data"]["id"] if relationship else None


def _problem(call: Call, index: int, item: dict[str, Any], historical: bool
             ) -> tuple[str, str] | None:
    """(pointer, detail) of what is wrong with one profile beyond its schema, if anything."""
    attributes = item["attributes"]
    base = f"{_PROFILES}/{index}/attributes"
    wanted = [channel for channel in _CHANNELS if _marketing(attributes, channel) is not None]
    if not wanted:
        return f"{base}/subscriptions", "subscriptions must name email or sms marketing"
    for channel in wanted:
        identifier = _IDENTIFIER_OF[channel]
        if not attributes.get(identifier):
            return f"{base}/{identifier}", f"{identifier} is required to subscribe to " \
                                           f"{channel} marketing"
        consented_at = (_marketing(attributes, channel) or {}).get("consented_at")
        pointer = f"{base}/subscriptions/{channel}/marketing/consented_at"
        if historical and not consented_at:
            return pointer, "consented_at is required when historical_import is true"
        if not historical and consented_at:
            return pointer, "consented_at may only be given with historical_import"
        if consented_at and schemas.parse_event_time(consented_at) >= call.now:
            return pointer, "consented_at must be in the past for a historical import"
    return None


def _wishes(call: Call, historical: bool, list_id: str | None) -> list[tuple[str, Subscription]]:
    attributes = call.document["data"]["attributes"]
    found = []
    for index, item in enumerate(attributes["profiles"]["data"]):
        profile = item["attributes"]
        for channel in _CHANNELS:
            marketing = _marketing(profile, channel)
            if marketing is None:
                continue
            consented_at = marketing.get("consented_at")
            found.append((f"{_PROFILES}/{index}/attributes/subscriptions/{channel}/marketing",
                          Subscription(
                              channel, profile.get("email"), profile.get("phone_number"),
                              marketing["consent"],
                              schemas.parse_event_time(consented_at) if consented_at else None,
                              METHOD, attributes.get("custom_source"), historical, list_id,
                              call.now, item.get("id") or "", "pending")))
    return found


def subscribe(call: Call) -> Reply:
    """POST /api/profile-subscription-bulk-create-jobs: up to 1,000 profiles; 202, no body."""
    invalid = _schema_errors(call, consent_schemas.SUBSCRIPTION_CREATE_VALIDATOR, 0)
    if invalid is not None:
        return invalid
    attributes = call.document["data"]["attributes"]
    historical = bool(attributes.get("historical_import"))
    profiles = attributes["profiles"]["data"]
    for index, item in enumerate(profiles):
        problem = _problem(call, index, item, historical)
        if problem is not None:
            return error(400, problem[1], pointer=problem[0], items=len(profiles))
    list_id = _list_id(call)
    wishes = _wishes(call, historical, list_id)
    account = call.standin.account
    with account.lock:
        if list_id is not None and list_id not in account.consent.lists:
            return error(404, f"No list with id {list_id!r}.", pointer="/data/relationships/"
                         "list/data/id", items=len(profiles))
        for pointer, wish in wishes:
            held = _known(account, wish)
            refusal = account.consent.refusal(wish.channel, held, wish.consented_at)
            if refusal is not None:
                return error(400, refusal, pointer=f"{pointer}/consented_at",
                             items=len(profiles))
        for _, wish in wishes:
            identifiers = {k: v for k, v in (("id", wish.profile_id), ("email", wish.email),
                                             ("phone_number", wish.phone_number)) if v}
            profile_id = account.upsert_profile(identifiers)
            done = account.consent.subscribe(replace(wish, profile_id=profile_id))
            account.consent.subscriptions.append(done)
            if done.channel == "email" and done.email:
                _clear_job_suppression(account, done.email, call)
    return Reply(202, items=len(profiles))


def _known(account: Any, wish: Subscription) -> str | None:
    for kind, value in (("id", wish.profile_id), ("email", wish.email),
                        ("phone_number", wish.phone_number)):
        if value:
            found: str | None = account.profile_id_for(kind, value)
            if found is not None:
                return found
    return None


def _clear_job_suppression(account: Any, email: str, call: Call) -> None:
    # Subscribing lifts USER_SUPPRESSED, so our suppression job's record goes with it.
    if email in account.suppressed:
        del account.suppressed[email]
        account.unsuppressed[email] = call.now


def unsubscribe(call: Call) -> Reply:
    """POST /api/profile-subscription-bulk-delete-jobs: up to 100 profiles; 202, no body."""
    invalid = _schema_errors(call, consent_schemas.SUBSCRIPTION_DELETE_VALIDATOR, 0)
    if invalid is not None:
        return invalid
    profiles = call.document["data"]["attributes"]["profiles"]["data"]
    gone = []
    for index, item in enumerate(profiles):
        attributes = item["attributes"]
        wanted = [channel for channel in _CHANNELS if _marketing(attributes, channel)]
        base = f"{_PROFILES}/{index}/attributes"
        if not wanted:
            return error(400, "subscriptions must name email or sms marketing",
                         pointer=f"{base}/subscriptions", items=len(profiles))
        for channel in wanted:
            identifier = _IDENTIFIER_OF[channel]
            if not attributes.get(identifier):
                return error(400, f"{identifier} is required to unsubscribe from {channel} "
                             "marketing", pointer=f"{base}/{identifier}", items=len(profiles))
            gone.append((channel, attributes.get("email"), attributes.get("phone_number")))
    list_id = _list_id(call)
    account = call.standin.account
    with account.lock:
        for channel, email, phone in gone:
            identifiers = {k: v for k, v in (("email", email), ("phone_number", phone)) if v}
            profile_id = account.upsert_profile(identifiers)
            account.consent.unsubscribe(Unsubscription(channel, email, phone, list_id,
                                                       call.now, profile_id))
    return Reply(202, items=len(profiles))


def add_to_list(call: Call) -> Reply:
    """POST /api/lists/<id>/relationships/profiles: membership only, consent untouched; 204.

    Joining a list starts its "Added to list" flows, as in Klaviyo.
    """
    invalid = _schema_errors(call, consent_schemas.LIST_MEMBERS_ADD_VALIDATOR, 0)
    if invalid is not None:
        return invalid
    list_id, profile_ids = call.path_args[0], [item["id"] for item in call.document["data"]]
    account = call.standin.account
    with account.lock:
        kept = account.consent.lists.get(list_id)
        if kept is None:
            return error(404, f"No list with id {list_id!r}.", items=len(profile_ids))
        for index, profile_id in enumerate(profile_ids):
            if profile_id not in account.profile_state:
                return error(400, f"No profile with id {profile_id!r}.",
                             pointer=f"/data/{index}/id", items=len(profile_ids))
        for profile_id in profile_ids:
            if profile_id in kept.members:
                continue
            kept.members.add(profile_id)
            state = account.profile_state[profile_id]
            account.consent.flows.append(FlowTrigger(
                ADDED_TO_LIST, state.get("email"), state.get("phone_number"), list_id, call.now))
    return Reply(204, items=len(profile_ids))
