"""The stand-in's HTTP server: routing, auth, revision, rate limits and faults, then endpoints.

Every ``/api`` request goes through the same gate, in this order: route (404/405), a
dropped connection if one is due, auth (401), ``revision`` (400), rate limits (429), an
injected server error (5xx), body checks (411/413/415/400), then the endpoint.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.klaviyo_standin import clock, endpoints, reads
from tests.klaviyo_standin.account import Account, RecordedEvent, RequestRecord
from tests.klaviyo_standin.faults import Faults, Moment
from tests.klaviyo_standin.jsonapi import Call, Reply, error
from tests.klaviyo_standin.limits import RateLimiter, Verdict
from tests.klaviyo_standin.oauth import OAuthServer, TokenState

Handler = Callable[[Call], Reply]

MB = 1024 * 1024
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
     {"POST": ("profile_bulk_import", endpoints.bulk_import_profiles, 5 * MB)}),
    (re.compile(r"/api/profile-suppression-bulk-create-jobs/?"),
     {"POST": ("suppress", endpoints.suppress, 5 * MB)}),
    (re.compile(r"/api/profile-suppression-bulk-delete-jobs/?"),
     {"POST": ("unsuppress", endpoints.unsuppress, 5 * MB)}),
    (re.compile(r"/api/metrics/?"), {"GET": ("metrics", reads.get_metrics, 0)}),
]
for _jobs in ("profile-bulk-import-jobs", "profile-suppression-bulk-create-jobs",
              "profile-suppression-bulk-delete-jobs"):
    ROUTES.append((re.compile(f"/api/{_jobs}{_JOB}"), {"GET": ("jobs", endpoints.get_job, 0)}))

_MAX_READ = 64 * MB  # bodies beyond this are not even read: the connection is closed


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: senders pool their connections
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the stand-in records requests in KlaviyoStandIn.requests instead

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        started = clock.monotonic()
        standin = self.server.standin
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._send(error(411, "Send a Content-Length; chunked bodies are not accepted."))
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_READ:
            self._send(error(413, "Payload too large."))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        url = urlsplit(self.path)
        reply = standin.dispatch(method, url.path, parse_qs(url.query), headers, body)
        # Recorded before answering, so a test that got its answer sees the record.
        standin.record_request(method, url.path, reply, clock.monotonic() - started)
        if reply.drop:
            self.close_connection = True  # no answer at all: the client sees a reset
        else:
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        payload = reply.encoded()
        self.send_response(reply.status)
        if payload:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], standin: KlaviyoStandIn) -> None:
        super().__init__(address, _RequestHandler)
        self.standin = standin


class KlaviyoStandIn:
    """A Klaviyo look-alike on 127.0.0.1 for tests; see the package docstring for its API."""

    def __init__(self, api_keys: Iterable[str] = ("pk_test_standin",), *,
                 enforce_limits: bool = True,
                 limits: Mapping[str, tuple[int, int]] | None = None,
                 window_scale: float = 1.0, latency_s: float = 0.0, seed: int = 0,
                 oauth_clients: Mapping[str, str] | None = None,
                 access_token_ttl_s: float = 3600.0,
                 bulk_refuses_known_unique_ids: bool = True,
                 report_all_errors: bool = False,
                 monotonic: Callable[[], float] | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_keys = set(api_keys)
        self.enforce_limits = enforce_limits
        self.limiter = RateLimiter(limits, window_scale)
        # The rate-limit windows' clock; a test may pass its own to step through windows.
        self._monotonic = monotonic or clock.monotonic
        self.latency_s = latency_s
        self.faults = Faults(seed)
        self.oauth = OAuthServer(oauth_clients or {}, access_token_ttl_s)
        self.bulk_refuses_known_unique_ids = bulk_refuses_known_unique_ids
        self.report_all_errors = report_all_errors
        self.account = Account(seed)
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving in a daemon thread; returns the base URL (``http://127.0.0.1:PORT``)."""
        if self._server is not None:
            return self.base_url
        self._server = _Server(self._address, self)
        self.base_url = f"http://{self._address[0]}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="klaviyo-standin", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> KlaviyoStandIn:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what it recorded (snapshots, safe to read while requests are served) ---------------

    @property
    def events(self) -> list[RecordedEvent]:
        with self.account.lock:
            return list(self.account.events)

    @property
    def received(self) -> Counter[str]:
        with self.account.lock:
            return Counter(self.account.received)

    @property
    def suppressed(self) -> dict[str, datetime]:
        with self.account.lock:
            return dict(self.account.suppressed)

    @property
    def unsuppressed(self) -> dict[str, datetime]:
        with self.account.lock:
            return dict(self.account.unsuppressed)

    @property
    def suppression_requests(self) -> list[list[str]]:
        with self.account.lock:
            return [list(emails) for emails in self.account.suppression_requests]

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        with self.account.lock:
            return {key: dict(value) for key, value in self.account.profiles.items()}

    @property
    def requests(self) -> list[RequestRecord]:
        with self.account.lock:
            return list(self.account.requests)

    # -- data for the read endpoints, tokens ----------------------------------------------

    def add_metric(self, name: str) -> str:
        """Create (or find) a metric; returns its id."""
        with self.account.lock:
            return self.account.metric(name, clock.now()).id

    def add_event(self, metric_name: str, email: str, time: datetime,
                  properties: dict[str, Any] | None = None,
                  external_id: str | None = None) -> RecordedEvent:
        """Put an event in the account as if Klaviyo already had it (e.g. from a web form)."""
        profile: dict[str, Any] = {"email": email}
        if external_id is not None:
            profile["external_id"] = external_id
        moment = time if time.tzinfo else time.replace(tzinfo=clock.now().tzinfo)
        with self.account.lock:
            return self.account.seed_event(metric_name, profile, moment, dict(properties or {}),
                                           clock.now())

    def issue_oauth_tokens(self, client_id: str) -> dict[str, object]:
        """An access and refresh token for ``client_id``, as an app install would get them."""
        return self.oauth.issue(client_id)

    # -- serving ---------------------------------------------------------------------------

    def record_request(self, method: str, path: str, reply: Reply, duration_s: float) -> None:
        record = RequestRecord(method, path, 0 if reply.drop else reply.status, reply.items,
                               clock.now(), duration_s, reply.error_codes)
        with self.account.lock:
            self.account.requests.append(record)

    def dispatch(self, method: str, path: str, query: dict[str, list[str]],
                 headers: dict[str, str], body: bytes) -> Reply:
        """Answer one request (called by the handler threads)."""
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        if path.rstrip("/") == "/oauth/token":
            if method != "POST":
                return Reply(405, {"error": "invalid_request"}, headers={"Allow": "POST"},
                             content_type="application/json")
            answer = self.oauth.token_endpoint(headers.get("authorization"), body)
            return Reply(answer.status, answer.body, content_type="application/json")
        route = self._route(method, path)
        if isinstance(route, Reply):
            return route
        (limit_name, handler, max_bytes), path_args = route
        drop = self.faults.take_drop()
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
        if self.faults.is_auth_failing():
            return error(401, "Incorrect authentication credentials.",
                         code="authentication_failed", title="Incorrect authentication "
                         "credentials.")
        authorization = headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        if not authorization:
            return error(401, "Authentication credentials were not provided.")
        if scheme == "Klaviyo-API-Key" and credential.strip() in self.api_keys:
            return "account"
        if scheme == "Bearer":
            state, client_id = self.oauth.check_bearer(credential.strip())
            if state is TokenState.VALID and client_id is not None:
                return f"oauth:{client_id}"
            detail = "The access token has expired." if state is TokenState.EXPIRED \
                else "Incorrect authentication credentials."
            return error(401, detail, code="authentication_failed",
                         title="Incorrect authentication credentials.")
        return error(401, "Incorrect authentication credentials.",
                     code="authentication_failed", title="Incorrect authentication credentials.")

    def _rate_limit(self, limit_name: str, quota: str) -> Verdict | Reply | None:
        forced = self.faults.take_rate_limit()
        if forced is not None:
            reply = error(429, f"Request was throttled. Expected available in {forced} second"
                          f"{'s' if forced != 1 else ''}.")
            reply.headers["Retry-After"] = str(forced)
            return reply
        if not self.enforce_limits:
            return None  # no RateLimit-* headers either: nothing to pace by
        verdict = self.limiter.acquire(limit_name, quota, self._monotonic())
        if verdict.allowed:
            return verdict
        reply = error(429, f"Request was throttled. Expected available in "
                      f"{verdict.retry_after_s} second{'s' if verdict.retry_after_s != 1 else ''}.")
        reply.headers.update(verdict.headers())
        return reply

    def _serve(self, method: str, path: str, query: dict[str, list[str]],
               headers: dict[str, str], body: bytes, handler: Handler, max_bytes: int,
               path_args: tuple[str, ...]) -> Reply:
        failure = self.faults.take_failure()
        if failure is not None and failure.moment is Moment.BEFORE:
            return error(failure.status, "Injected server error; nothing was processed.")
        call = Call(self, method, path, query, headers, body, clock.now(), path_args)
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
