"""The stand-in itself: a threaded HTTP server on loopback and the object tests hold.

Requests are answered by :class:`~tests.klaviyo_standin.dispatcher.Dispatcher`; this module
moves bytes, keeps the server's lifecycle, and exposes what the account recorded.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.klaviyo_standin import clock
from tests.klaviyo_standin.account import Account, RecordedEvent, RequestRecord
from tests.klaviyo_standin.catalog import CatalogState
from tests.klaviyo_standin.consent_view import ConsentRecords
from tests.klaviyo_standin.dispatcher import MB, STATS_PATH, Dispatcher
from tests.klaviyo_standin.faults import Faults
from tests.klaviyo_standin.jsonapi import Reply, error
from tests.klaviyo_standin.limits import RateLimiter
from tests.klaviyo_standin.oauth import OAuthServer
from tests.klaviyo_standin.profile_jobs import ProfileJobBook

_MAX_READ = 64 * MB  # bodies beyond this are not even read: the connection is closed


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: senders pool their connections
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK (~40 ms a request), which Klaviyo's servers do not add.
    disable_nagle_algorithm = True
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
        if url.path != STATS_PATH:
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
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on kept-alive clients, so a stopped stand-in really stops answering."""
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):  # already gone
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a SIGKILLed sender, a stop()) is normal here.
        pass


class KlaviyoStandIn(ConsentRecords):
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
        self.monotonic = monotonic or clock.monotonic
        self.latency_s = latency_s
        self.faults = Faults(seed)
        self.oauth = OAuthServer(oauth_clients or {}, access_token_ttl_s)
        self.bulk_refuses_known_unique_ids = bulk_refuses_known_unique_ids
        self.report_all_errors = report_all_errors
        self.account = Account(seed)
        self.catalog = CatalogState()  # categories, items, variants and their jobs
        self.profile_jobs = ProfileJobBook()  # bulk profile import jobs, see profile_jobs
        self.internal_errors: list[str] = []  # tracebacks of stand-in bugs (answered 500)
        self._dispatcher = Dispatcher(self)
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
        self._server.close_connections()
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

    def stats(self) -> dict[str, Any]:
        """Counts of what was recorded (also served as JSON at ``GET /_standin/stats``)."""
        with self.account.lock:
            statuses = Counter(str(r.status) for r in self.account.requests)
            return {
                "events": len(self.account.events),
                "arrivals": sum(self.account.received.values()),
                "received_more_than_once": sum(
                    1 for count in self.account.received.values() if count > 1),
                "requests": dict(sorted(statuses.items())),
                "suppressed": len(self.account.suppressed),
                "profiles": len(self.account.profiles),
                **self.account.consent.counts(),
                "deletion_requests": len(self.account.deletion_requests),
            }

    # -- data for the read endpoints, tokens ----------------------------------------------

    def add_metric(self, name: str) -> str:
        """Create (or find) a metric; returns its id."""
        with self.account.lock:
            return self.account.metric(name, clock.now()).id

    def add_event(self, metric_name: str, email: str, time: datetime,
                  properties: dict[str, Any] | None = None,
                  external_id: str | None = None,
                  unique_id: str | None = None) -> RecordedEvent:
        """Put an event in the account as if Klaviyo already had it (e.g. from a web form,
        with the ``unique_id`` the front end gave it)."""
        profile: dict[str, Any] = {"email": email}
        if external_id is not None:
            profile["external_id"] = external_id
        moment = time if time.tzinfo else time.replace(tzinfo=clock.now().tzinfo)
        with self.account.lock:
            return self.account.seed_event(metric_name, profile, moment, dict(properties or {}),
                                           clock.now(), unique_id)

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
        try:
            return self._dispatcher.dispatch(method, path, query, headers, body)
        except Exception as exc:  # a bug in the stand-in: say so instead of hanging up
            detail = "".join(traceback.format_exception(exc))
            with self.account.lock:
                self.internal_errors.append(detail)
            return error(500, f"Stand-in bug: {detail}", code="standin_bug")
