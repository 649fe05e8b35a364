"""The stand-in's catalog: categories, items and variants, changed by bulk jobs.

``POST /api/catalog-<kind>-bulk-<create|update|delete>-jobs`` (at most 100 resources,
validated against the schemas below, 202 with a queued job) applies the job at once, each
resource on its own: a resource that cannot be applied (already there, not there, its item
or category missing, or refused on purpose with :meth:`CatalogState.refuse`) is an error of
the job, whose ``source.pointer`` is ``/data/attributes/<plural>/data/<n>``. ``GET`` of the
job answers it complete with those errors and counts. ``GET /api/catalog-items`` (and
``-variants``, ``-categories``) lists what is held, 100 a page, with
``filter=any(ids,["$custom:::$default:::X",...])``.

A job is "in progress" from its POST until it is read back complete (after
``processing_reads`` reads answered "processing"); more than
``max_in_progress`` (Klaviyo: 500) at once refuses the POST (400), so a test can show a
client keeps under the cap.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.klaviyo_standin.jsonapi import Call, Reply, error
from tests.klaviyo_standin.schemas import PayloadValidator

KINDS = ("item", "variant", "category")
ACTIONS = ("create", "update", "delete")
PLURAL = {"item": "items", "variant": "variants", "category": "categories"}
PREFIX = "$custom:::$default:::"
MAX_PER_JOB = 100
_ID_PATTERN = r"^\$custom:::\$default:::.+$"
_FILTER = re.compile(r'^any\(ids,\[(.*)\]\)$')

# --- schemas, written from the notes on Klaviyo's catalog API --------------------------------

_TEXT = {"type": "string"}
_MAYBE_TEXT = {"type": ["string", "null"]}
_MAYBE_NUMBER = {"type": ["number", "null"]}


def _link(type_name: str) -> dict[str, Any]:
    return {"type": "object", "required": ["type", "id"],
            "properties": {"type": {"const": type_name},
                           "id": {"type": "string", "pattern": _ID_PATTERN}}}


def _links(type_name: str) -> dict[str, Any]:
    return {"type": "object", "required": ["data"],
            "properties": {"data": {"type": "array", "items": _link(type_name)}}}


_SHARED = {"title": _MAYBE_TEXT, "description": _MAYBE_TEXT, "url": _MAYBE_TEXT,
           "price": _MAYBE_NUMBER, "image_full_url": _MAYBE_TEXT,
           "image_thumbnail_url": _MAYBE_TEXT,
           "images": {"type": ["array", "null"], "items": _TEXT},
           "custom_metadata": {"type": ["object", "null"]},
           "published": {"type": ["boolean", "null"]}}
_CUSTOM = {"integration_type": {"enum": ["$custom", None]}, "catalog_type": _MAYBE_TEXT,
           "external_id": {"type": "string", "minLength": 1}}
_VARIANT_ONLY = {"sku": _MAYBE_TEXT, "inventory_quantity": _MAYBE_NUMBER,
                 "inventory_policy": {"enum": [0, 1, 2, None]}}


def _attributes(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": False}


def _resource(kind: str, action: str) -> dict[str, Any]:
    type_name = f"catalog-{kind}"
    props: dict[str, Any] = {"type": {"const": type_name}}
    required = ["type"]
    if action != "create":
        props["id"] = {"type": "string", "pattern": _ID_PATTERN}
        required.append("id")
    if action == "delete":
        return {"type": "object", "required": required, "properties": props}
    required.append("attributes")
    if kind == "category":
        names = {"name": _TEXT if action == "create" else _MAYBE_TEXT}
        attrs = _attributes(["external_id", "name"] if action == "create" else [],
                            {**(_CUSTOM if action == "create" else {}), **names})
        props["relationships"] = {"type": "object",
                                  "properties": {"items": _links("catalog-item")}}
    elif kind == "item":
        attrs = _attributes(["external_id", "title", "description", "url"]
                            if action == "create" else [],
                            {**(_CUSTOM if action == "create" else {}), **_SHARED})
        props["relationships"] = {"type": "object",
                                  "properties": {"categories": _links("catalog-category")}}
    else:
        attrs = _attributes(["external_id", "title", "description", "sku",
                             "inventory_quantity", "price", "url"]
                            if action == "create" else [],
                            {**(_CUSTOM if action == "create" else {}), **_SHARED,
                             **_VARIANT_ONLY})
        if action == "create":
            props["relationships"] = {
                "type": "object", "required": ["item"],
                "properties": {"item": {"type": "object", "required": ["data"],
                                        "properties": {"data": _link("catalog-item")}}}}
            required.append("relationships")
    props["attributes"] = attrs
    return {"type": "object", "required": required, "properties": props}


def job_schema(kind: str, action: str) -> dict[str, Any]:
    plural = PLURAL[kind]
    listing = {"type": "object", "required": ["data"], "properties": {"data": {
        "type": "array", "minItems": 1, "maxItems": MAX_PER_JOB,
        "items": _resource(kind, action)}}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "required": ["data"], "properties": {"data": {
                "type": "object", "required": ["type", "attributes"],
                "properties": {"type": {"const": f"catalog-{kind}-bulk-{action}-job"},
                               "attributes": {"type": "object", "required": [plural],
                                              "properties": {plural: listing}}}}}}


VALIDATORS = {(k, a): PayloadValidator(job_schema(k, a)) for k in KINDS for a in ACTIONS}


# --- what the account's catalog holds ---------------------------------------------------------

@dataclass
class CatalogJob:
    id: str
    kind: str
    action: str
    total: int
    errors: list[dict[str, Any]]
    created_at: datetime
    reads: int = 0


@dataclass
class CatalogState:
    """The catalog, its jobs and what was done to it; everything under :attr:`lock`."""

    max_in_progress: int = 500
    #: Reads of a job answered "processing" before it is "complete" (0: complete at once).
    processing_reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {k: {} for k in KINDS})
    #: (kind, action) -> external id -> how often it was applied.
    applied: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: {(k, a): Counter() for k in KINDS for a in ACTIONS})
    jobs: dict[str, CatalogJob] = field(default_factory=dict)
    refused: dict[tuple[str, str], str] = field(default_factory=dict)
    refused_posts: int = 0
    _serial: int = 0

    def refuse(self, kind: str, external_id: str, detail: str) -> None:
        """Make every job touching this object report it as an error with ``detail``."""
        with self.lock:
            self.refused[(kind, external_id)] = detail

    def add(self, kind: str, external_id: str, attributes: dict[str, Any]) -> None:
        """Put an object in the catalog as if someone else had created it."""
        with self.lock:
            self.objects[kind][external_id] = {"attributes": {"external_id": external_id,
                                                              **attributes}}

    def held(self, kind: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: dict(v["attributes"]) for k, v in self.objects[kind].items()}

    def relationships(self, kind: str, external_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.objects[kind][external_id].get("relationships") or {})

    def counts(self, action: str, kind: str) -> Counter[str]:
        with self.lock:
            return Counter(self.applied[(kind, action)])

    def unread_jobs(self) -> list[str]:
        """Jobs never read back as complete."""
        with self.lock:
            return [j.id for j in self.jobs.values() if j.reads <= self.processing_reads]

    def in_progress(self) -> int:
        return sum(1 for j in self.jobs.values() if j.reads <= self.processing_reads)

    def new_job_id(self) -> str:
        self._serial += 1
        return f"cj{self._serial:06d}"


def _external(resource_id: str) -> str:
    return resource_id.removeprefix(PREFIX)


def _apply(state: CatalogState, kind: str, action: str, resource: dict[str, Any]) -> str | None:
    """Apply one resource of a job; the error detail if it cannot be. Caller holds the lock."""
    held = state.objects[kind]
    if action == "create":
        external_id = resource["attributes"]["external_id"]
    else:
        external_id = _external(resource["id"])
    refused = state.refused.get((kind, external_id))
    if refused is not None:
        return refused
    rels = resource.get("relationships") or {}
    if action == "create":
        if external_id in held:
            return f"A catalog {kind} with external_id {external_id!r} already exists."
        missing = _missing_links(state, rels)
        if missing:
            return missing
        held[external_id] = {"attributes": dict(resource["attributes"]), "relationships": rels}
    elif action == "update":
        if external_id not in held:
            return f"No catalog {kind} with id {resource['id']!r}."
        missing = _missing_links(state, rels)
        if missing:
            return missing
        held[external_id]["attributes"].update(resource.get("attributes") or {})
        if rels:
            held[external_id]["relationships"] = rels
    else:
        if external_id not in held:
            return f"No catalog {kind} with id {resource['id']!r}."
        del held[external_id]
        if kind == "item":  # an item's variants go with it
            for vid in [v for v, obj in state.objects["variant"].items()
                        if _item_of(obj) == external_id]:
                del state.objects["variant"][vid]
    state.applied[(kind, action)][external_id] += 1
    return None


def _item_of(variant: dict[str, Any]) -> str | None:
    link = ((variant.get("relationships") or {}).get("item") or {}).get("data") or {}
    return _external(link["id"]) if link.get("id") else None


def _missing_links(state: CatalogState, rels: dict[str, Any]) -> str | None:
    item = (rels.get("item") or {}).get("data")
    if item and _external(item["id"]) not in state.objects["item"]:
        return f"The catalog item {item['id']!r} does not exist."
    for link in (rels.get("categories") or {}).get("data") or []:
        if _external(link["id"]) not in state.objects["category"]:
            return f"The catalog category {link['id']!r} does not exist."
    return None


# --- handlers ----------------------------------------------------------------------------------

def post_job(kind: str, action: str) -> Callable[[Call], Reply]:
    validator = VALIDATORS[(kind, action)]
    plural = PLURAL[kind]

    def handler(call: Call) -> Reply:
        found = list(validator.errors(call.document))
        if found:
            pointer, detail = found[0]
            return error(400, detail, pointer=pointer)
        resources = call.document["data"]["attributes"][plural]["data"]
        state: CatalogState = call.standin.catalog
        with state.lock:
            if state.in_progress() >= state.max_in_progress:
                state.refused_posts += 1
                return error(400, f"At most {state.max_in_progress} catalog jobs may be in "
                             "progress at once.", items=len(resources))
            job_errors = []
            for index, resource in enumerate(resources):
                detail = _apply(state, kind, action, resource)
                if detail is not None:
                    job_errors.append({"id": str(uuid.uuid4()), "code": "invalid",
                                       "title": "Invalid input.", "detail": detail,
                                       "source": {"pointer":
                                                  f"/data/attributes/{plural}/data/{index}"}})
            job = CatalogJob(state.new_job_id(), kind, action, len(resources), job_errors,
                             call.now)
            state.jobs[job.id] = job
        return Reply(202, _job_document(call, job, "queued"), items=len(resources))

    return handler


def get_job(call: Call) -> Reply:
    kind, action = call.path_args[0], call.path_args[1]
    state: CatalogState = call.standin.catalog
    with state.lock:
        job = state.jobs.get(call.path_args[2])
        if job is None or (job.kind, job.action) != (kind, action):
            return error(404, f"No catalog-{kind}-bulk-{action}-job {call.path_args[2]!r}.")
        job.reads += 1
        status = "complete" if job.reads > state.processing_reads else "processing"
    return Reply(200, _job_document(call, job, status))


def _job_document(call: Call, job: CatalogJob, status: str) -> dict[str, Any]:
    done = status == "complete"
    type_name = f"catalog-{job.kind}-bulk-{job.action}-job"
    link = f"{call.standin.base_url}/api/{type_name}s/{job.id}/"
    return {"data": {"type": type_name, "id": job.id, "links": {"self": link},
                     "attributes": {
                         "status": status, "created_at": job.created_at.isoformat(),
                         "total_count": job.total,
                         "completed_count": job.total - len(job.errors) if done else 0,
                         "failed_count": len(job.errors) if done else 0,
                         "completed_at": job.created_at.isoformat() if done else None,
                         "errors": job.errors if done else []}},
            "links": {"self": link}}


def list_objects(kind: str) -> Callable[[Call], Reply]:
    def handler(call: Call) -> Reply:
        state: CatalogState = call.standin.catalog
        wanted: set[str] | None = None
        text = call.param("filter")
        if text is not None:
            match = _FILTER.match(text)
            if match is None:
                return error(400, f"Unsupported filter {text!r}; use any(ids,[...]).",
                             parameter="filter")
            wanted = {_external(part.strip().strip('"')) for part in match.group(1).split(",")
                      if part.strip()}
        offset = int(call.param("page[cursor]") or 0)
        with state.lock:
            ids = sorted(i for i in state.objects[kind] if wanted is None or i in wanted)
            page = [{"type": f"catalog-{kind}", "id": PREFIX + i,
                     "attributes": dict(state.objects[kind][i]["attributes"])}
                    for i in ids[offset:offset + MAX_PER_JOB]]
        more = offset + MAX_PER_JOB < len(ids)
        base = f"{call.standin.base_url}/api/catalog-{PLURAL[kind]}"
        links: dict[str, Any] = {"self": base, "next": None}
        if more:
            query = f"page%5Bcursor%5D={offset + MAX_PER_JOB}"
            if text is not None:
                from urllib.parse import quote

                query += f"&filter={quote(text)}"
            links["next"] = f"{base}?{query}"
        return Reply(200, {"data": page, "links": links})

    return handler


def routes(mb: int) -> list[tuple[re.Pattern[str], dict[str, tuple[str, Any, int]]]]:
    """The catalog's entries for the dispatcher's route table."""
    out: list[tuple[re.Pattern[str], dict[str, tuple[str, Any, int]]]] = []
    for kind in KINDS:
        for action in ACTIONS:
            path = f"/api/catalog-{kind}-bulk-{action}-jobs"
            out.append((re.compile(path + "/?"),
                        {"POST": (f"catalog_{kind}_{action}", post_job(kind, action), 5 * mb)}))
        out.append((re.compile(f"/api/catalog-({kind})-bulk-(create|update|delete)-jobs"
                               r"/(?P<id>[A-Za-z0-9]+)/?"),
                    {"GET": ("catalog_job_reads", get_job, 0)}))
        out.append((re.compile(f"/api/catalog-{PLURAL[kind]}/?"),
                    {"GET": ("catalog_reads", list_objects(kind), 0)}))
    return out


#: Rate limits of the catalog endpoints, merged into the limiter's defaults.
LIMITS: dict[str, tuple[int, int]] = {
    **{f"catalog_{k}_{a}": (75, 750) for k in KINDS for a in ACTIONS},
    "catalog_job_reads": (75, 750),
    "catalog_reads": (350, 3500),
}
