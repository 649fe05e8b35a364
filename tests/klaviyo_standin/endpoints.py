"""The write endpoints: events (single and bulk), profile import, suppression jobs.

Each takes a :class:`Call` whose body is already parsed into ``call.document`` and answers
as Klaviyo does: a 400 refuses the whole request and nothing in it is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.klaviyo_standin import fastcheck, schemas
from tests.klaviyo_standin.account import EventCandidate, Job
from tests.klaviyo_standin.jsonapi import Call, Reply, error, errors

MAX_BULK_EVENTS = 1000
_BULK_POINTER = "/data/attributes/events-bulk-create/data"


def _schema_errors(call: Call, validator: schemas.PayloadValidator, items: int,
                   fast_ok: Callable[[Any], bool] | None = None) -> Reply | None:
    if fast_ok is not None and fast_ok(call.document):
        return None  # the fast path accepts only what the schema accepts
    found = []
    for pointer, detail in validator.errors(call.document):
        found.append((detail, pointer, None))
        if not call.standin.report_all_errors:
            break
    return errors(400, found, items=items) if found else None


def _profile(resource: dict[str, Any], keep_nulls: bool = False) -> dict[str, Any]:
    """A profile resource's attributes plus its Klaviyo id if given.

    Nulls are dropped, except for profile-import, where Klaviyo reads null as "clear it".
    """
    profile = {k: v for k, v in resource.get("attributes", {}).items()
               if keep_nulls or v is not None}
    if resource.get("id"):
        profile["id"] = resource["id"]
    return profile


def _candidate(call: Call, pointer: str, attributes: dict[str, Any], profile: dict[str, Any],
               backfill: bool) -> EventCandidate:
    time = attributes.get("time")
    own_backfill = attributes.get("backfill")
    return EventCandidate(
        pointer=pointer,
        profile=profile,
        metric=attributes["metric"]["data"]["attributes"]["name"],
        unique_id=attributes.get("unique_id"),
        time=schemas.parse_event_time(time) if time else call.now.replace(microsecond=0),
        properties=attributes["properties"],
        value=attributes.get("value"),
        value_currency=attributes.get("value_currency"),
        backfill=bool(own_backfill if own_backfill is not None else backfill),
    )


def _rejected(call: Call, candidates: list[EventCandidate]) -> Reply | None:
    faults = call.standin.faults
    if not faults.has_rejections():
        return None
    found = []
    for event in candidates:
        detail = faults.rejection(event.unique_id)
        if detail is not None:
            found.append((detail, event.pointer, None))
            if not call.standin.report_all_errors:
                break
    return errors(400, found, items=len(candidates)) if found else None


def _accept(call: Call, candidates: list[EventCandidate], refuse_known: bool) -> Reply | None:
    """Record the events, or the 400 that refuses them all."""
    refused = _rejected(call, candidates)
    if refused is not None:
        return refused
    account = call.standin.account
    with account.lock:
        if refuse_known or len(candidates) > 1:
            refusal = account.refusal_for(candidates, refuse_known)
            if refusal is not None:
                return error(400, refusal.detail, pointer=refusal.pointer,
                             code="duplicate_unique_id", items=len(candidates))
        account.record(candidates, call.now)
    return None


def create_event(call: Call) -> Reply:
    """POST /api/events: one event; a repeat of a recorded one is accepted and dropped."""
    invalid = _schema_errors(call, schemas.EVENT_CREATE_VALIDATOR, 1, fastcheck.event_create_ok)
    if invalid is not None:
        return invalid
    attributes = call.document["data"]["attributes"]
    profile = _profile(attributes["profile"]["data"])
    candidate = _candidate(call, "/data", attributes, profile, False)
    refused = _accept(call, [candidate], refuse_known=False)
    return refused or Reply(202, items=1)


def bulk_create_events(call: Call) -> Reply:
    """POST /api/event-bulk-create-jobs: up to 1,000 events grouped per profile."""
    groups = _groups(call.document)
    total = sum(len(_events_of(group)) for group in groups)
    invalid = _schema_errors(call, schemas.EVENT_BULK_CREATE_VALIDATOR, total,
                             fastcheck.event_bulk_create_ok)
    if invalid is not None:
        return invalid
    if total > MAX_BULK_EVENTS:
        return error(400, f"A bulk request accepts at most {MAX_BULK_EVENTS} events; "
                     f"this one has {total}.", pointer=_BULK_POINTER, items=total)
    candidates = []
    for group_index, group in enumerate(groups):
        attributes = group["attributes"]
        profile = _profile(attributes["profile"]["data"])
        backfill = bool(attributes.get("backfill"))
        for event_index, event in enumerate(attributes["events"]["data"]):
            pointer = f"{_BULK_POINTER}/{group_index}/attributes/events/data/{event_index}"
            candidates.append(_candidate(call, pointer, event["attributes"], profile, backfill))
    refused = _accept(call, candidates, call.standin.bulk_refuses_known_unique_ids)
    if refused is not None:
        return refused
    job = _add_job(call, "event-bulk-create-job", total)
    return Reply(202, _job_document(call, job, "queued"), items=total)


def _groups(document: Any) -> list[Any]:
    try:
        groups = document["data"]["attributes"]["events-bulk-create"]["data"]
    except (KeyError, TypeError):
        return []
    return groups if isinstance(groups, list) else []


def _events_of(group: Any) -> list[Any]:
    try:
        events = group["attributes"]["events"]["data"]
    except (KeyError, TypeError):
        return []
    return events if isinstance(events, list) else []


def import_profile(call: Call) -> Reply:
    """POST /api/profile-import: create (201) or update (200) one profile."""
    invalid = _schema_errors(call, schemas.PROFILE_IMPORT_VALIDATOR, 1)
    if invalid is not None:
        return invalid
    profile = _profile(call.document["data"], keep_nulls=True)
    account = call.standin.account
    with account.lock:
        created, profile_id = account.import_profile(profile)
        state = dict(account.profile_state[profile_id])
    document = {"data": {"type": "profile", "id": profile_id, "attributes": state,
                         "links": {"self": f"{call.standin.base_url}/api/profiles/{profile_id}/"}}}
    return Reply(201 if created else 200, document, items=1)


def suppress(call: Call) -> Reply:
    """POST /api/profile-suppression-bulk-create-jobs: suppress up to 100 emails."""
    return _suppression(call, schemas.SUPPRESSION_CREATE_VALIDATOR,
                        "profile-suppression-bulk-create-job")


def unsuppress(call: Call) -> Reply:
    """POST /api/profile-suppression-bulk-delete-jobs: lift suppression of up to 100 emails."""
    return _suppression(call, schemas.SUPPRESSION_DELETE_VALIDATOR,
                        "profile-suppression-bulk-delete-job")


def _suppression(call: Call, validator: schemas.PayloadValidator, job_type: str) -> Reply:
    invalid = _schema_errors(call, validator, 0)
    if invalid is not None:
        return invalid
    emails = [item["attributes"]["email"]
              for item in call.document["data"]["attributes"]["profiles"]["data"]]
    account = call.standin.account
    with account.lock:
        if job_type.endswith("create-job"):
            account.suppress(emails, call.now)
        else:
            account.unsuppress(emails, call.now)
    job = _add_job(call, job_type, len(emails))
    return Reply(202, _job_document(call, job, "queued"), items=len(emails))


def _add_job(call: Call, job_type: str, total: int) -> Job:
    with call.standin.account.lock:
        return call.standin.account.add_job(job_type, total, call.now)


def _job_document(call: Call, job: Job, status: str) -> dict[str, Any]:
    completed = status == "complete"
    path = f"/api/{job.type}s/{job.id}/"
    return {
        "data": {
            "type": job.type,
            "id": job.id,
            "attributes": {
                "status": status,
                "created_at": job.created_at.isoformat(),
                "total_count": job.total_count,
                "completed_count": job.total_count if completed else 0,
                "completed_at": job.created_at.isoformat() if completed else None,
            },
            "links": {"self": f"{call.standin.base_url}{path}"},
        },
        "links": {"self": f"{call.standin.base_url}{path}"},
    }


def get_job(call: Call) -> Reply:
    """GET /api/<job type>s/<id>: jobs complete at once in the stand-in."""
    job_type = call.path.split("/")[2][:-1]  # "/api/profile-...-jobs/ID" -> "profile-...-job"
    with call.standin.account.lock:
        job = call.standin.account.jobs.get(call.path_args[0])
    if job is None or job.type != job_type:
        return error(404, f"No {job_type} with id {call.path_args[0]!r}.")
    return Reply(200, _job_document(call, job, "complete"))
