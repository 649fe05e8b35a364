"""Klaviyo's catalog bulk jobs: create, update and delete categories, items and variants.

Each job takes at most 100 resources and answers 202 with a job id; the job is read back
(``GET .../<job id>``) until it is complete, and its ``errors`` point at the refused
resources (``source.pointer`` ``/data/attributes/<items|variants|categories>/data/<n>``).
Transport, auth, pacing and audit are :meth:`KlaviyoClient.request`'s.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from klaviyo_sync.senders.client import KlaviyoClient

#: Resources per bulk job request (Klaviyo's cap).
MAX_PER_JOB = 100
CUSTOM_PREFIX = "$custom:::$default:::"


class CatalogKind(enum.StrEnum):
    CATEGORY = "category"
    ITEM = "item"
    VARIANT = "variant"

    @property
    def resource_type(self) -> str:
        return f"catalog-{self.value}"

    @property
    def plural(self) -> str:
        return "categories" if self is CatalogKind.CATEGORY else f"{self.value}s"


class CatalogAction(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


def catalog_id(external_id: str) -> str:
    """Klaviyo's id of a custom catalog object: ``$custom:::$default:::<external id>``."""
    return CUSTOM_PREFIX + external_id


def job_type(kind: CatalogKind, action: CatalogAction) -> str:
    return f"catalog-{kind.value}-bulk-{action.value}-job"


def job_path(kind: CatalogKind, action: CatalogAction) -> str:
    return f"/api/{job_type(kind, action)}s"


def list_path(kind: CatalogKind) -> str:
    return f"/api/catalog-{kind.plural}"


def job_body(kind: CatalogKind, action: CatalogAction,
             resources: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The request document of one bulk job."""
    if not 1 <= len(resources) <= MAX_PER_JOB:
        raise ValueError(f"a catalog job takes 1 to {MAX_PER_JOB} resources, "
                         f"not {len(resources)}")
    return {"data": {"type": job_type(kind, action),
                     "attributes": {kind.plural: {"data": list(resources)}}}}


class JobStatus(enum.StrEnum):
    """Our record of a job: prepared (recorded, maybe posted), posted (Klaviyo has it),
    complete (read back), failed (refused whole), abandoned (replanned after a crash)."""

    PREPARED = "prepared"
    POSTED = "posted"
    COMPLETE = "complete"
    FAILED = "failed"
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class ItemError:
    """One refused resource of a job: its place in the request body and Klaviyo's words."""

    index: int | None
    code: str
    detail: str

    @classmethod
    def from_json(cls, error: dict[str, Any]) -> ItemError:
        pointer = str((error.get("source") or {}).get("pointer") or "")
        match = re.search(r"/data/attributes/[a-z]+/data/(\d+)", pointer)
        detail = str(error.get("detail") or error.get("title") or error.get("code") or "")
        return cls(int(match.group(1)) if match else None, str(error.get("code") or ""),
                   detail)


@dataclass(frozen=True)
class JobAnswer:
    """A job as Klaviyo shows it when read back."""

    job_id: str
    status: str  # queued | processing | complete | cancelled
    total: int
    completed: int
    failed: int
    errors: tuple[ItemError, ...] = ()

    @property
    def finished(self) -> bool:
        return self.status in ("complete", "cancelled")

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> JobAnswer:
        data = document.get("data") or {}
        attributes = data.get("attributes") or {}
        return cls(job_id=str(data.get("id") or ""), status=str(attributes.get("status")),
                   total=int(attributes.get("total_count") or 0),
                   completed=int(attributes.get("completed_count") or 0),
                   failed=int(attributes.get("failed_count") or 0),
                   errors=tuple(ItemError.from_json(e) for e in attributes.get("errors") or []
                                if isinstance(e, dict)))


class CatalogApi(Protocol):
    """What the catalog pass needs of Klaviyo (the real API or the dry-run outbox)."""

    def post_job(self, kind: CatalogKind, action: CatalogAction,
                 resources: Sequence[dict[str, Any]]) -> str:
        """Post one bulk job; its Klaviyo job id. Raises SendError types."""
        ...

    def get_job(self, kind: CatalogKind, action: CatalogAction, job_id: str) -> JobAnswer:
        """Read one job back."""
        ...

    def existing(self, kind: CatalogKind, external_ids: Iterable[str]) -> set[str]:
        """Which of these external ids Klaviyo holds (after a crash mid-POST)."""
        ...


class KlaviyoCatalog:
    """:class:`CatalogApi` over Klaviyo's API, through one :class:`KlaviyoClient`."""

    def __init__(self, client: KlaviyoClient) -> None:
        self.client = client

    def post_job(self, kind: CatalogKind, action: CatalogAction,
                 resources: Sequence[dict[str, Any]]) -> str:
        path = job_path(kind, action)
        resp = self.client.request("POST", path, job_body(kind, action, resources),
                                   items=len(resources))
        return JobAnswer.from_document(resp.json()).job_id

    def get_job(self, kind: CatalogKind, action: CatalogAction, job_id: str) -> JobAnswer:
        path = job_path(kind, action)
        resp = self.client.request("GET", f"{path}/{job_id}", None,
                                   endpoint=f"GET {path}/{{job_id}}")
        return JobAnswer.from_document(resp.json())

    def existing(self, kind: CatalogKind, external_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(external_ids))
        found: set[str] = set()
        path = list_path(kind)
        for start in range(0, len(ids), MAX_PER_JOB):
            chunk = ids[start:start + MAX_PER_JOB]
            quoted = ",".join(f'"{catalog_id(i)}"' for i in chunk)
            url: str | None = path
            query: dict[str, str] | None = {"filter": f"any(ids,[{quoted}])",
                                            f"fields[catalog-{kind.value}]": "external_id"}
            while url:
                resp = self.client.request("GET", url, None, query=query,
                                           endpoint=f"GET {path}")
                body = resp.json()
                for resource in body.get("data") or []:
                    found.add(str(resource.get("id", "")).removeprefix(CUSTOM_PREFIX))
                url = (body.get("links") or {}).get("next")
                query = None
        return found
