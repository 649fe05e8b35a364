"""Bulk profile import jobs: the request body, the API calls, and their dry-run twin.

POST /api/profile-bulk-import-jobs takes up to 10,000 profiles / 5 MB and answers 202 with
a job id; GET .../{id} tells the job's status and counts; GET .../{id}/import-errors lists
the profiles it could not import (cursor-paginated), each with a JSON pointer into the
request body. Transport, auth, pacing and the audit row are KlaviyoClient.request's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from klaviyo_sync.senders.client import KlaviyoClient
from klaviyo_sync.senders.dryrun import DryRunSender

JOBS_PATH = "/api/profile-bulk-import-jobs"
#: The pacer's endpoint names for the read-backs (the POST is named by its own path).
GET_JOB = "GET /api/profile-bulk-import-jobs/{id}"
GET_ERRORS = "GET /api/profile-bulk-import-jobs/{id}/import-errors"
MAX_PROFILES = 10_000
_HEAD = b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":['
_TAIL = b"]}}}}"
#: Bytes of a body around its profiles: a batch's size is this plus each item + a comma.
BODY_OVERHEAD = len(_HEAD) + len(_TAIL)
_PROFILE_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(?:/|$)")


def profile_item(attributes: dict[str, Any]) -> bytes:
    """One profile resource of the body, encoded once (the digest hashes these bytes)."""
    return json.dumps({"type": "profile", "attributes": attributes}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def bulk_import_body(items: Sequence[bytes]) -> bytes:
    """POST /api/profile-bulk-import-jobs for already encoded profile items, joined
    once: a body of several MB is not copied again to put its head and tail on."""
    if not items:
        return _HEAD + _TAIL
    parts = list(items)
    parts[0] = _HEAD + parts[0]
    parts[-1] = parts[-1] + _TAIL
    return b",".join(parts)


def pointer_index(pointer: str | None) -> int | None:
    """The profile a JSON pointer names (``/data/attributes/profiles/data/17/...`` -> 17)."""
    match = _PROFILE_POINTER.match(pointer or "")
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class JobStatus:
    """What Klaviyo says of a job."""

    status: str  # queued | processing | complete | cancelled
    total: int
    completed: int
    failed: int

    @property
    def finished(self) -> bool:
        return self.status in ("complete", "cancelled")


@dataclass(frozen=True)
class ImportFailure:
    """One profile a job could not import, as Klaviyo reports it."""

    code: str
    detail: str
    pointer: str | None
    original_payload: dict[str, Any] | None

    def describe(self) -> str:
        return f"{self.code}: {self.detail}" if self.code else self.detail


class ProfileJobsApi(Protocol):
    """Creates bulk profile import jobs and reads them back."""

    def create_job(self, body: bytes, profiles: int) -> str:
        """Post one job; its id. Raises RejectedSendError (with Klaviyo's errors) for a
        400, the other SendError types as KlaviyoClient classifies answers."""
        ...

    def get_job(self, job_id: str) -> JobStatus: ...

    def import_errors(self, job_id: str) -> Iterator[ImportFailure]: ...


class KlaviyoProfileJobs:
    """:class:`ProfileJobsApi` on Klaviyo's API."""

    def __init__(self, client: KlaviyoClient, page_size: int = 100) -> None:
        self.client = client
        self.page_size = page_size

    def create_job(self, body: bytes, profiles: int) -> str:
        resp = self.client.request("POST", JOBS_PATH, body, items=profiles)
        return str(resp.json()["data"]["id"])

    def get_job(self, job_id: str) -> JobStatus:
        resp = self.client.request("GET", f"{JOBS_PATH}/{job_id}", None, endpoint=GET_JOB)
        attributes = resp.json()["data"]["attributes"]
        return JobStatus(str(attributes["status"]), int(attributes.get("total_count") or 0),
                         int(attributes.get("completed_count") or 0),
                         int(attributes.get("failed_count") or 0))

    def import_errors(self, job_id: str) -> Iterator[ImportFailure]:
        url: str | None = f"{JOBS_PATH}/{job_id}/import-errors"
        query: dict[str, str] | None = {"page[size]": str(self.page_size)}
        while url:
            body = self.client.request("GET", url, None, query=query,
                                       endpoint=GET_ERRORS).json()
            for item in body.get("data") or []:
                attributes = item.get("attributes") or {}
                yield ImportFailure(str(attributes.get("code") or ""),
                                    str(attributes.get("detail") or attributes.get("title")
                                        or ""),
                                    (attributes.get("source") or {}).get("pointer"),
                                    attributes.get("original_payload"))
            url = (body.get("links") or {}).get("next")
            query = None  # the next link carries the cursor


class DryRunProfileJobs:
    """:class:`ProfileJobsApi` that writes each job's exact body to the outbox; its jobs
    complete at once, without errors (as the dry-run sender acks the events it writes)."""

    def __init__(self, sender: DryRunSender) -> None:
        self.sender = sender
        self._totals: dict[str, int] = {}

    def create_job(self, body: bytes, profiles: int) -> str:
        self.sender.write_request(JOBS_PATH, body, profiles)
        job_id = f"dry-run-{self.sender.requests}"
        self._totals[job_id] = profiles
        return job_id

    def get_job(self, job_id: str) -> JobStatus:
        total = self._totals.get(job_id, 0)
        return JobStatus("complete", total, total, 0)

    def import_errors(self, job_id: str) -> Iterator[ImportFailure]:
        return iter(())
