"""Bulk profile import jobs in the stand-in: create, read back, list import errors.

- ``POST /api/profile-bulk-import-jobs``: up to 10,000 profiles. Validation is all or
  nothing, as Klaviyo's: one malformed email refuses the whole request with a 400 whose
  pointer names it (``/data/attributes/profiles/data/17/attributes/email``). The answer
  is 202 with a ``queued`` job; its profiles are in the account from then on (the account
  applies them before its next read or change of a profile).
- ``GET /api/profile-bulk-import-jobs/<id>``: the job's status moves one step per read,
  ``queued`` -> ``processing`` -> ``complete`` (``polls_to_complete`` reads; 1 completes
  on the first read), with total, completed and failed counts.
- ``GET /api/profile-bulk-import-jobs/<id>/import-errors``: the profiles the job could not
  import, cursor-paginated (``page[size]`` 1-100, default 20; ``links.next``), each with
  code, title, detail, ``source.pointer`` and ``original_payload``.

Tests make a profile fail inside an accepted job with ``standin.profile_jobs.fail_emails({
email: detail})`` (not imported, listed in the job's import errors).
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.klaviyo_standin import schemas
from tests.klaviyo_standin.jsonapi import Call, Reply, error, errors

MAX_PROFILES = 10_000
JOB_TYPE = "profile-bulk-import-job"
_PROFILES_POINTER = "/data/attributes/profiles/data"
_EMAIL = re.compile(schemas.EMAIL_PATTERN)
_PHONE = re.compile(schemas.PHONE_PATTERN)
_ATTRIBUTE_TYPES: dict[str, type | tuple[type, ...]] = {
    "email": str, "phone_number": str, "external_id": str, "first_name": str,
    "last_name": str, "organization": str, "locale": str, "title": str, "image": str,
    "anonymous_id": str, "location": dict, "properties": dict,
}


@dataclass
class ImportJob:
    """One accepted job: its size, the profiles that failed in it, how often it was read."""

    id: str
    total: int
    failures: list[tuple[int, str, dict[str, Any]]]  # (index in body, detail, attributes)
    reads: int = 0


@dataclass
class ProfileJobBook:
    """The stand-in's profile import jobs and the per-email failures tests inject."""

    polls_to_complete: int = 2
    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: dict[str, ImportJob] = field(default_factory=dict)
    failing: dict[str, str] = field(default_factory=dict)  # lower-case email -> detail

    def fail_emails(self, details: dict[str, str]) -> None:
        """Profiles with these emails fail inside their job, with this detail."""
        with self.lock:
            self.failing.update({email.lower(): detail for email, detail in details.items()})

    def unread(self) -> list[str]:
        """Ids of jobs never read back until complete."""
        with self.lock:
            return [j.id for j in self.jobs.values() if j.reads < self.polls_to_complete]

    def status_of(self, job: ImportJob) -> str:
        if job.reads >= self.polls_to_complete:
            return "complete"
        return "queued" if job.reads == 0 else "processing"


def _fast_problem(index: int, item: Any) -> tuple[str, str] | None:
    """(pointer, detail) of the first problem in one profile resource, or None.

    Checks what the schema does for the usual shapes, quickly: 10,000 profiles through
    jsonschema cost seconds per request. Written for the common case (a dict of strings
    and a properties object): the rare value of another class takes the slower branch.
    """
    if item.__class__ is not dict or item.get("type") != "profile":
        return f"{_PROFILES_POINTER}/{index}/type", "type must be 'profile'"
    attributes = item.get("attributes")
    if attributes.__class__ is not dict:
        return f"{_PROFILES_POINTER}/{index}/attributes", "attributes must be of type object"
    for name, value in attributes.items():
        if value.__class__ is not str and value is not None:
            kind = _ATTRIBUTE_TYPES.get(name)
            if kind is not None and not isinstance(value, kind):
                return (f"{_PROFILES_POINTER}/{index}/attributes/{name}",
                        f"{name} must be of type {kind}")
        elif value is not None and (name == "location" or name == "properties"):
            return (f"{_PROFILES_POINTER}/{index}/attributes/{name}",
                    f"{name} must be of type {_ATTRIBUTE_TYPES[name]}")
    email = attributes.get("email")
    if email is not None and not _EMAIL.match(email):
        return (f"{_PROFILES_POINTER}/{index}/attributes/email",
                f"email {email!r} is not a valid email address")
    phone = attributes.get("phone_number")
    if phone is not None and not _PHONE.match(phone):
        return (f"{_PROFILES_POINTER}/{index}/attributes/phone_number",
                "phone_number is not in E.164 format")
    if not (item.get("id") or email or phone or attributes.get("external_id")):
        return f"{_PROFILES_POINTER}/{index}", (
            "a profile needs at least one identifier: id, email, phone_number or external_id")
    return None


def _profiles_of(document: Any) -> list[Any] | None:
    try:
        data = document["data"]
        if data["type"] != JOB_TYPE:
            return None
        items = data["attributes"]["profiles"]["data"]
    except (KeyError, TypeError):
        return None
    return items if isinstance(items, list) and items else None


def create_job(call: Call) -> Reply:
    """POST /api/profile-bulk-import-jobs."""
    items = _profiles_of(call.document)
    if items is None:  # the shape is wrong: let the schema say exactly where
        found = [(detail, pointer, None) for pointer, detail
                 in schemas.PROFILE_BULK_IMPORT_VALIDATOR.errors(call.document)][:1]
        return errors(400, found or [("The document is not a profile bulk import job.", "/data",
                                      None)])
    if len(items) > MAX_PROFILES:
        return error(400, f"A bulk import accepts at most {MAX_PROFILES} profiles; this one "
                     f"has {len(items)}.", pointer=_PROFILES_POINTER, items=len(items))
    problems = []
    for index, item in enumerate(items):
        problem = _fast_problem(index, item)
        if problem is not None:
            problems.append((problem[1], problem[0], None))
            if not call.standin.report_all_errors:
                break
    if problems:  # all or nothing: nothing of the request is imported
        return errors(400, problems, items=len(items))
    book: ProfileJobBook = call.standin.profile_jobs
    with book.lock:
        failing = dict(book.failing)
    failures = _injected_failures(items, failing) if failing else []
    account = call.standin.account
    with account.lock:
        job = ImportJob(account.add_job(JOB_TYPE, len(items), call.now).id, len(items),
                        failures)
        account.import_profiles(call.body, frozenset(index for index, _, _ in failures))
    with book.lock:
        book.jobs[job.id] = job
    return Reply(202, _document(call, job, "queued"), items=len(items))


def _injected_failures(items: list[Any], failing: dict[str, str]
                       ) -> list[tuple[int, str, dict[str, Any]]]:
    """The profiles tests made fail: (index, detail, attributes)."""
    failures = []
    for index, item in enumerate(items):
        attributes = item["attributes"]
        detail = failing.get(str(attributes.get("email") or "").lower())
        if detail is not None:
            failures.append((index, detail, attributes))
    return failures


def get_job(call: Call) -> Reply:
    """GET /api/profile-bulk-import-jobs/<id>: one step further per read."""
    book: ProfileJobBook = call.standin.profile_jobs
    with book.lock:
        job = book.jobs.get(call.path_args[0])
    if job is None:
        return error(404, f"No {JOB_TYPE} with id {call.path_args[0]!r}.")
    with book.lock:
        job.reads += 1
        status = book.status_of(job)
    return Reply(200, _document(call, job, status))


def get_errors(call: Call) -> Reply:
    """GET /api/profile-bulk-import-jobs/<id>/import-errors, cursor-paginated."""
    book: ProfileJobBook = call.standin.profile_jobs
    with book.lock:
        job = book.jobs.get(call.path_args[0])
    if job is None:
        return error(404, f"No {JOB_TYPE} with id {call.path_args[0]!r}.")
    try:
        size = int(call.param("page[size]") or 20)
        start = int(call.param("page[cursor]") or 0)
    except ValueError:
        return error(400, "page[size] and page[cursor] must be integers.",
                     parameter="page[size]")
    if not 1 <= size <= 100:
        return error(400, "page[size] must be between 1 and 100.", parameter="page[size]")
    page = job.failures[start:start + size]
    base = f"{call.standin.base_url}/api/profile-bulk-import-jobs/{job.id}/import-errors"
    links = {"self": f"{base}?page[size]={size}&page[cursor]={start}"}
    if start + size < len(job.failures):
        links["next"] = f"{base}?page[size]={size}&page[cursor]={start + size}"
    data = [{"type": "import-error", "id": str(uuid.UUID(int=job_index * 7919 + index)),
             "attributes": {"code": "invalid", "title": "Invalid input.", "detail": detail,
                            "source": {"pointer": f"{_PROFILES_POINTER}/{index}"},
                            "original_payload": attributes}}
            for job_index, (index, detail, attributes) in enumerate(page, start)]
    return Reply(200, {"data": data, "links": links})


def _document(call: Call, job: ImportJob, status: str) -> dict[str, Any]:
    failed = len(job.failures)
    done = {"complete": job.total, "processing": (job.total - failed) // 2}.get(status, 0)
    self_link = f"{call.standin.base_url}/api/profile-bulk-import-jobs/{job.id}/"
    return {
        "data": {
            "type": JOB_TYPE,
            "id": job.id,
            "attributes": {
                "status": status,
                "created_at": call.now.isoformat(),
                "total_count": job.total,
                "completed_count": done - (failed if status == "complete" else 0),
                "failed_count": failed if status == "complete" else 0,
                "completed_at": call.now.isoformat() if status == "complete" else None,
            },
            "links": {"self": self_link},
        },
        "links": {"self": self_link},
    }
