"""JSON schemas of the consent and erasure request bodies (subscribe, unsubscribe, delete).

Written by hand from the project's notes on Klaviyo's API, like :mod:`schemas`, whose
builders they reuse. What a schema cannot say (email needed for the email channel, consent
times against ``historical_import``, exactly one identifier to delete) the endpoints check.
"""

from __future__ import annotations

from typing import Any

from tests.klaviyo_standin import schemas
from tests.klaviyo_standin.schemas import (
    _EMAIL,
    _FORMATS,
    _PHONE,
    _STRING,
    PayloadValidator,
    _data,
    _document,
    _list_of,
    _nullable,
    _object,
    _resource,
)

MAX_SUBSCRIBE_PROFILES = 1000
MAX_UNSUBSCRIBE_PROFILES = 100
MAX_LIST_MEMBERS_ADDED = 1000


@_FORMATS.checks("klaviyo-date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if isinstance(value, str):  # the "type" keyword reports non-strings
        schemas.parse_event_time(value)
    return True


def _parameters(consent: str, with_time: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"consent": {"enum": [consent],
                                              "errorMessage": f"consent must be {consent!r}"}}
    if with_time:
        properties["consented_at"] = {"type": ["string", "null"], "format": "klaviyo-date-time"}
    return {"type": ["object", "null"], "required": ["consent"], "properties": properties}


def _channels(consent: str, with_time: bool) -> dict[str, Any]:
    parameters = _parameters(consent, with_time)
    channel = {"type": ["object", "null"],
               "properties": {"marketing": parameters, "transactional": parameters}}
    return {"type": "object", "properties": {
        "email": channel, "sms": channel,
        "whatsapp": {"type": ["object", "null"]}, "push": {"type": ["object", "null"]}}}


_IDENTIFIED = {
    "anyOf": [
        {"required": ["id"], "properties": {"id": _STRING}},
        {"properties": {"attributes": {"anyOf": [
            {"required": [name], "properties": {name: _STRING}}
            for name in ("email", "phone_number")
        ]}}},
    ],
    "errorMessage": "a profile needs an email or a phone_number (or an id)",
}


def _profile(consent: str, with_time: bool) -> dict[str, Any]:
    attributes = _object(["subscriptions"], {
        "email": _nullable(_EMAIL), "phone_number": _nullable(_PHONE),
        "subscriptions": _channels(consent, with_time),
        "age_gated_date_of_birth": _nullable(_STRING),
    })
    return {**_object(["type", "attributes"], {"type": {"const": "profile"},
                                               "id": _nullable(_STRING),
                                               "attributes": attributes}),
            "allOf": [_IDENTIFIED]}


_LIST_RELATIONSHIP = _object([], {"list": _data(_object(["type", "id"], {
    "type": {"const": "list"}, "id": {"type": "string", "minLength": 1}}))})


def _job(job_type: str, attributes: dict[str, Any]) -> dict[str, Any]:
    return _document(_object(["type", "attributes"], {
        "type": {"const": job_type}, "attributes": attributes,
        "relationships": _LIST_RELATIONSHIP}))


SUBSCRIPTION_CREATE_JOB = _job("profile-subscription-bulk-create-job", _object(["profiles"], {
    "custom_source": _nullable(_STRING),
    "historical_import": {"type": ["boolean", "null"]},
    "profiles": _data(_list_of(_profile("SUBSCRIBED", True), MAX_SUBSCRIBE_PROFILES)),
}))

SUBSCRIPTION_DELETE_JOB = _job("profile-subscription-bulk-delete-job", _object(["profiles"], {
    "profiles": _data(_list_of(_profile("UNSUBSCRIBED", False), MAX_UNSUBSCRIBE_PROFILES)),
}))

DELETION_JOB = _document(_resource("data-privacy-deletion-job", _object(["profile"], {
    "profile": _data(_object(["type", "attributes"], {
        "type": {"const": "profile"}, "id": _nullable(_STRING),
        "attributes": {"type": "object", "properties": {"email": _nullable(_EMAIL),
                                                        "phone_number": _nullable(_PHONE)}},
    })),
})))

LIST_MEMBERS_ADD = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_object(
    ["data"], {"data": _list_of(_object(["type", "id"], {
        "type": {"const": "profile"}, "id": {"type": "string", "minLength": 1}}),
        MAX_LIST_MEMBERS_ADDED)})}

SUBSCRIPTION_CREATE_VALIDATOR = PayloadValidator(SUBSCRIPTION_CREATE_JOB)
SUBSCRIPTION_DELETE_VALIDATOR = PayloadValidator(SUBSCRIPTION_DELETE_JOB)
DELETION_VALIDATOR = PayloadValidator(DELETION_JOB)
LIST_MEMBERS_ADD_VALIDATOR = PayloadValidator(LIST_MEMBERS_ADD)
