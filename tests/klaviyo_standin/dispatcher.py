"""The gate every request passes, in order: the OAuth token endpoint aside, route (404/405),
a dropped connection if one is due, auth (401), ``revision`` (400), rate limits (429), an
injected server error (5xx), body checks (413/415/400), then the endpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.klaviyo_standin import (
    catalog,
    clock,
    endpoints,
    optouts,
    privacy,
    profile_jobs,
    reads,
    subscriptions,
)
from tests.klaviyo_standin.faults import Moment
from tests.klaviyo_standin.jsonapi import Call, Reply, error
from tests.klaviyo_standin.limits import Verdict
from tests.klaviyo_standin.oauth import TokenState

if TYPE_CHECKING:
    from tests.klaviyo_standin.server import KlaviyoStandIn

Handler = Callable[[Call], Reply]

MB = 1024 * 1024
#: Not Klaviyo's: counts for a benchmark that runs the stand-in in another process.
STATS_PATH = "/_standin/stats"
_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9_-]+)?$")
_JOB = r"/(?P<id>[A-Za-z0-9]+)/?"

# path pattern -> {method: (rate-limit endpoint, handler, body limit in bytes)}
ROUTES: list[tuple[re.Pattern[str], dict[str, tuple[str, Handler, int]]]] = [
    (re.compile(r"/api/events/?"), {"POST": ("events", endpoints.create_event, 5 * MB),
                                    "GET": ("get_events", reads.get_events, 0)}),
    (re.compile(r"/api/event-bulk-create-jobs/?"),
     {"POST": ("bulk_events", endpoints.bulk_create_events, 5 * MB)}),
    (re.compile(r"/api/profile-import/?"),
     {"POST": ("profile_import", endpoints.import_profile, 100 * 1024)}),
    (re.compile(r"/api/profile-bulk-import-jobs/?"),
     {"POST": ("profile_bulk_import", profile_jobs.create_job, 5 * MB)}),
    (re.compile(r"/api/profile-bulk-import-jobs/(?P<id>[A-Za-z0-9]+)/import-errors/?"),
     {"GET": ("profile_bulk_import_reads", profile_jobs.get_errors, 0)}),
    (re.compile(f"/api/profile-bulk-import-jobs{_JOB}"),
     {"GET": ("profile_bulk_import_reads", profile_jobs.get_job, 0)}),
    (re.compile(r"/api/profile-suppression-bulk-create-jobs/?"),
     {"POST": ("suppress", endpoints.suppress, 5 * MB)}),
    (re.compile(r"/api/profile-suppression-bulk-delete-jobs/?"),
     {"POST": ("unsuppress", endpoints.unsuppress, 5 * MB)}),
    (re.compile(r"/api/metrics/?"), {"GET": ("metrics", reads.get_metrics, 0)}),
    # consent and erasure: subscriptions.py, optouts.py, privacy.py
    (re.compile(r"/api/profile-subscription-bulk-create-jobs/?"),
     {"POST": ("subscribe", subscriptions.subscribe, 5 * MB)}),
    (re.compile(r"/api/profile-subscription-bulk-delete-jobs/?"),
     {"POST": ("unsubscribe", subscriptions.unsubscribe, 5 * MB)}),
    (re.compile(r"/api/profiles/?"), {"GET": ("get_profiles", optouts.get_profiles, 0)}),
    (re.compile(r"/api/lists/?"), {"GET": ("get_lists", optouts.get_lists, 0)}),
    (re.compile(r"/api/lists/(?P<id>[A-Za-z0-9]+)/relationships/profiles/?"),
     {"POST": ("list_members_add", subscriptions.add_to_list, 5 * MB)}),
    (re.compile(r"/api/data-privacy-deletion-jobs/?"),
     {"POST": ("privacy_deletion", privacy.request_deletion, 100 * 1024)}),
]
for _jobs in ("profile-suppression-bulk-create-jobs",
              "profile-suppression-bulk-delete-jobs"):
    ROUTES.append((re.compile(f"/api/{_jobs}{_JOB}"), {"GET": ("jobs", endpoints.get_job, 0)}))
ROUTES += catalog.routes(MB)



class Dispatcher:
    """Turns a parsed HTTP request into a :class:`Reply` for one stand-in."""

    def __init__(self, standin: KlaviyoStandIn) -> None:
        self.standin = standin

    def dispatch(self, method: str, path: str, query: dict[str, list[str]],
                 headers: dict[str, str], body: bytes) -> Reply:
        """Answer one request, through every gate in the module docstring's order."""
        if path == STATS_PATH and method == "GET":
            return Reply(200, self.standin.stats(), content_type="application/json")
        if path.rstrip("/") == "/oauth/token":
            if method != "POST":
                return Reply(405, {"error": "invalid_request"}, headers={"Allow": "POST"},
                             content_type="application/json")
            answer = self.standin.oauth.token_endpoint(headers.get("authorization"), body)
            return Reply(answer.status, answer.body, content_type="application/json")
        route = self._route(method, path)
        if isinstance(route, Reply):
            return route
        (limit_name, handler, max_bytes), path_args = route
        drop = self.standin.faults.take_drop()
        if drop is Moment.BEFORE:
            return Reply(0, drop=True)
        quota = self._authenticate(headers)
        if isinstance(quota, Reply):
            return quota
        revision = headers.get("revision")
        if not revision or not _REVISION.match(revision):
            return error(400, "The revision header is missing or invalid (YYYY-MM-DD).",
                         parameter="revision")
        verdict = self._rate_limit(limit_name, quota)
        if isinstance(verdict, Reply):
            return verdict
        reply = self._serve(method, path, query, headers, body, handler, max_bytes, path_args)
        if verdict is not None:
            reply.headers.update(verdict.headers())
        if drop is Moment.AFTER:
            return Reply(0, drop=True, items=reply.items)
        return reply

    def _route(self, method: str, path: str
               ) -> Reply | tuple[tuple[str, Handler, int], tuple[str, ...]]:
        for pattern, methods in ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method not in methods:
                allowed = ", ".join(sorted(methods))
                reply = error(405, f"Method {method} not allowed; use {allowed}.")
                reply.headers["Allow"] = allowed
                return reply
            return methods[method], tuple(match.groups())
        return error(404, f"No endpoint at {path}.")

    def _authenticate(self, headers: dict[str, str]) -> str | Reply:
        """The rate-limit quota of the caller: "account" for keys, the client id for OAuth."""
        if self.standin.faults.is_auth_failing():
            return error(401, "Incorrect authentication credentials.",
                         code="authentication_failed", title="Incorrect authentication "
                         "credentials.")
        authorization = headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        if not authorization:
            return error(401, "Authentication credentials were not provided.")
        if scheme == "Klaviyo-API-Key" and credential.strip() in self.standin.api_keys:
            return "account"
        if scheme == "Bearer":
            state, client_id = self.standin.oauth.check_bearer(credential.strip())
            if state is TokenState.VALID and client_id is not None:
                return f"oauth:{client_id}"
            detail = "The access token has expired." if state is TokenState.EXPIRED \
                else "Incorrect authentication credentials."
            return error(401, detail, code="authentication_failed",
                         title="Incorrect authentication credentials.")
        return error(401, "Incorrect authentication credentials.",
                     code="authentication_failed", title="Incorrect authentication credentials.")

    def _rate_limit(self, limit_name: str, quota: str) -> Verdict | Reply | None:
        forced = self.standin.faults.take_rate_limit()
        if forced is not None:
            reply = error(429, f"Request was throttled. Expected available in {forced} second"
                          f"{'s' if forced != 1 else ''}.")
            reply.headers["Retry-After"] = str(forced)
            return reply
        if not self.standin.enforce_limits:
            return None  # no RateLimit-* headers either: nothing to pace by
        verdict = self.standin.limiter.acquire(limit_name, quota, self.standin.monotonic())
        if verdict.allowed:
            return verdict
        reply = error(429, f"Request was throttled. Expected available in "
                      f"{verdict.retry_after_s} second{'s' if verdict.retry_after_s != 1 else ''}.")
        reply.headers.update(verdict.headers())
        return reply

    def _serve(self, method: str, path: str, query: dict[str, list[str]],
               headers: dict[str, str], body: bytes, handler: Handler, max_bytes: int,
               path_args: tuple[str, ...]) -> Reply:
        failure = self.standin.faults.take_failure()
        if failure is not None and failure.moment is Moment.BEFORE:
            return error(failure.status, "Injected server error; nothing was processed.")
        call = Call(self.standin, method, path, query, headers, body, clock.now(), path_args)
        if method == "POST":
            refused = self._parse_body(call, max_bytes)
            if refused is not None:
                return refused
        reply = handler(call)
        if failure is not None:  # after processing: the work is done, the answer is lost
            return error(failure.status, "Injected server error after processing.",
                         items=reply.items)
        return reply

    @staticmethod
    def _parse_body(call: Call, max_bytes: int) -> Reply | None:
        media_type = call.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in ("application/vnd.api+json", "application/json"):
            return error(415, f"Content-Type must be application/vnd.api+json, "
                         f"not {media_type or 'missing'}.")
        if len(call.body) > max_bytes:
            return error(413, f"The payload is {len(call.body)} bytes; at most {max_bytes} "
                         "are accepted.")
        try:
            call.document = json.loads(call.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return error(400, f"The body is not valid JSON: {exc}", pointer="")
        return None
