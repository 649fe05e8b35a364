"""JSON schemas (Draft 2020-12) of the request bodies the stand-in accepts, compiled once.

Written by hand from the facts in the project's notes on Klaviyo's API (not copied from
Klaviyo's OpenAPI files, which a user's machine does not have). Where Klaviyo's spec says
``nullable`` the schema allows ``null``. Checks a schema cannot express cheaply (at most
1,000 events per bulk request, repeated ``unique_id``) are done by the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from tests.klaviyo_standin import clock

MAX_EVENT_PROPERTIES = 400
MAX_PROPERTY_STRING_CHARS = 100 * 1024  # Klaviyo: "100 KB" per string; counted in characters
EARLIEST_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)
LATEST_EVENT_AHEAD = timedelta(days=365)

_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("klaviyo-event-time", raises=ValueError)
def _is_event_time(value: object) -> bool:
    if isinstance(value, str):  # the "type" keyword reports non-strings
        check_event_time(value)
    return True


def check_event_time(value: str) -> datetime:
    """An event time Klaviyo accepts: ISO 8601, after 1990, at most a year ahead.

    Raises ValueError with the reason otherwise.
    """
    moment = parse_event_time(value)
    if moment <= EARLIEST_EVENT_TIME:
        raise ValueError("time must be after the year 1990")
    if moment > clock.now() + LATEST_EVENT_AHEAD:
        raise ValueError("time must be at most one year in the future")
    return moment


def parse_event_time(value: str) -> datetime:
    """An event's ``time`` as an aware UTC datetime truncated to the second (as Klaviyo does).

    A date without a time of day is refused; a time without an offset is taken as UTC.
    """
    if len(value) < 16 or value[10] not in "Tt ":
        raise ValueError(f"time {value[:40]!r} is not an ISO 8601 date-time")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    return {**schema, "type": [kind, "null"]}


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+[1-9][0-9]{1,14}$"
CURRENCY_PATTERN = "^[A-Za-z]{3}$"

_STRING = {"type": "string"}
_EMAIL = {"type": "string", "pattern": EMAIL_PATTERN,
          "errorMessage": "is not a valid email address"}
_PHONE = {"type": "string", "pattern": PHONE_PATTERN,
          "errorMessage": "is not a phone number in E.164 format"}

_PROFILE_ATTRIBUTES = {
    "type": "object",
    "properties": {
        "email": _nullable(_EMAIL),
        "phone_number": _nullable(_PHONE),
        "external_id": _nullable(_STRING),
        "anonymous_id": _nullable(_STRING),
        "first_name": _nullable(_STRING),
        "last_name": _nullable(_STRING),
        "organization": _nullable(_STRING),
        "locale": _nullable(_STRING),
        "title": _nullable(_STRING),
        "image": _nullable(_STRING),
        "location": {"type": ["object", "null"]},
        "properties": {"type": ["object", "null"]},
    },
}

# "At least one identifier": a Klaviyo id on the resource, or a non-null email, phone
# number or external id among the attributes.
_PROFILE_IDENTIFIED = {
    "anyOf": [
        {"required": ["id"], "properties": {"id": _STRING}},
        {"properties": {"attributes": {"anyOf": [
            {"required": [name], "properties": {name: _STRING}}
            for name in ("email", "phone_number", "external_id")
        ]}}},
    ],
    "errorMessage": "a profile needs at least one identifier: id, email, phone_number "
                    "or external_id",
}

PROFILE_RESOURCE = {
    "type": "object",
    "required": ["type", "attributes"],
    "properties": {
        "type": {"const": "profile"},
        "id": _nullable(_STRING),
        "attributes": _PROFILE_ATTRIBUTES,
    },
    "allOf": [_PROFILE_IDENTIFIED],
}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _resource(type_name: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """A JSON:API resource object: ``{"type": type_name, "attributes": ...}``."""
    return _object(["type", "attributes"], {"type": {"const": type_name},
                                            "attributes": attributes})


def _data(schema: dict[str, Any]) -> dict[str, Any]:
    """A ``{"data": ...}`` wrapper, as JSON:API nests every relationship and list."""
    return _object(["data"], {"data": schema})


def _list_of(items: dict[str, Any], max_items: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "minItems": 1}
    if max_items is not None:
        schema["maxItems"] = max_items
    schema["items"] = items
    return schema


def _document(data: dict[str, Any]) -> dict[str, Any]:
    """A top-level request document."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_data(data)}


_METRIC = _data(_resource("metric", _object(
    ["name"], {"name": {"type": "string", "minLength": 1, "maxLength": 127},
               "service": _nullable(_STRING)},
)))

# The attributes every event has, in the single and the bulk endpoint alike.
_EVENT_ATTRIBUTES: dict[str, Any] = {
    "properties": {
        "type": "object",
        "maxProperties": MAX_EVENT_PROPERTIES,
        "additionalProperties": {"maxLength": MAX_PROPERTY_STRING_CHARS},
    },
    "time": {"type": ["string", "null"], "format": "klaviyo-event-time"},
    "value": {"type": ["number", "null"]},
    "value_currency": {"type": ["string", "null"], "pattern": CURRENCY_PATTERN,
                       "errorMessage": "is not an ISO 4217 currency code"},
    "unique_id": _nullable(_STRING),
    "backfill": {"type": ["boolean", "null"]},
    "metric": _METRIC,
}

_PROFILE_WRAPPER = _data(PROFILE_RESOURCE)

EVENT_CREATE = _document(_resource("event", _object(
    ["properties", "metric", "profile"], {**_EVENT_ATTRIBUTES, "profile": _PROFILE_WRAPPER},
)))

_BULK_EVENT = _resource("event", _object(["properties", "metric"], _EVENT_ATTRIBUTES))

EVENT_BULK_CREATE_JOB = _document(_resource("event-bulk-create-job", _object(
    ["events-bulk-create"],
    {"events-bulk-create": _data(_list_of(_resource("event-bulk-create", _object(
        ["profile", "events"],
        {"backfill": {"type": ["boolean", "null"]},
         "profile": _PROFILE_WRAPPER,
         "events": _data(_list_of(_BULK_EVENT))},
    ))))},
)))

PROFILE_IMPORT = _document(PROFILE_RESOURCE)

PROFILE_BULK_IMPORT_JOB = _document(_resource("profile-bulk-import-job", _object(
    ["profiles"], {"profiles": _data(_list_of(PROFILE_RESOURCE, max_items=10_000))},
)))


def _suppression_job(job_type: str) -> dict[str, Any]:
    profile = _resource("profile", _object(["email"], {"email": _EMAIL}))
    return _document(_resource(job_type, _object(
        ["profiles"], {"profiles": _data(_list_of(profile, max_items=100))},
    )))


SUPPRESSION_CREATE_JOB = _suppression_job("profile-suppression-bulk-create-job")
SUPPRESSION_DELETE_JOB = _suppression_job("profile-suppression-bulk-delete-job")


class PayloadValidator:
    """One compiled Draft 2020-12 validator that reports errors as JSON:API error sources."""

    def __init__(self, schema: dict[str, Any]) -> None:
        Draft202012Validator.check_schema(schema)
        self._validator = Draft202012Validator(schema, format_checker=_FORMATS)

    def errors(self, document: Any) -> Iterator[tuple[str, str]]:
        """(JSON pointer, detail) for each violation, in document order."""
        for error in self._validator.iter_errors(document):
            path = list(error.absolute_path)
            if error.validator == "required" and isinstance(error.instance, dict):
                # Point at the missing member itself, the most precise place there is.
                path += [name for name in error.validator_value if name not in error.instance][:1]
            yield pointer(path), describe(error)


def pointer(path: Any) -> str:
    """A JSON pointer (RFC 6901) for a path of keys and indexes."""
    parts = (str(part).replace("~", "~0").replace("/", "~1") for part in path)
    return "".join("/" + part for part in parts)


def describe(error: ValidationError) -> str:
    """A short, readable detail; never the whole offending instance (it may be megabytes)."""
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    field = str(error.absolute_path[-1]) if error.absolute_path else "the document"
    if custom:
        return f"{field} {custom}" if error.validator in ("pattern", "type") else custom
    keyword, expected = error.validator, error.validator_value
    if keyword == "required":
        return error.message
    if keyword == "type":
        return f"{field} must be of type {expected}"
    if keyword == "const":
        return f"{field} must be {expected!r}"
    if keyword == "maxProperties":
        return f"{field} has more than {expected} properties"
    if keyword in ("maxItems", "minItems"):
        return f"{field} must have {'at most' if keyword == 'maxItems' else 'at least'} "\
               f"{expected} items"
    if keyword in ("maxLength", "minLength"):
        limit = "at most" if keyword == "maxLength" else "at least"
        return f"{field} must be {limit} {expected} characters long"
    if keyword == "format":
        return f"{field}: {error.cause or error.message}"
    return error.message[:300]


EVENT_CREATE_VALIDATOR = PayloadValidator(EVENT_CREATE)
EVENT_BULK_CREATE_VALIDATOR = PayloadValidator(EVENT_BULK_CREATE_JOB)
PROFILE_IMPORT_VALIDATOR = PayloadValidator(PROFILE_IMPORT)
PROFILE_BULK_IMPORT_VALIDATOR = PayloadValidator(PROFILE_BULK_IMPORT_JOB)
SUPPRESSION_CREATE_VALIDATOR = PayloadValidator(SUPPRESSION_CREATE_JOB)
SUPPRESSION_DELETE_VALIDATOR = PayloadValidator(SUPPRESSION_DELETE_JOB)
