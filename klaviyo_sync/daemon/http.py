"""The optional loopback listener: /healthz (200 or 503 with the status as JSON) and /metrics.

Loopback only: the endpoints are unauthenticated, so anything farther away goes through
a reverse proxy or an exporter the operator controls.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from klaviyo_sync.daemon.health import Health, failing_status
from klaviyo_sync.daemon.metrics import Metrics
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.logconfig import get_logger

log = get_logger(__name__)


def parse_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9377' or '[::1]:9377' -> (host, port); refuses non-loopback hosts."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"daemon.http_listen: {listen!r} is not a loopback address "
                          "(use 127.0.0.1:PORT and a reverse proxy to expose it)")
    return host, int(port)


class _Server(HTTPServer):
    """Connections are served by a fixed pool of threads, not a thread each: a flood of
    scrapes (or clients that connect and say nothing) cannot exhaust the process."""

    # The kernel queues this many connections while the pool is busy (the default of 5
    # made bursts of scrapers wait on SYN retransmits).
    request_queue_size = 1024
    metrics: Metrics
    pool: ThreadPoolExecutor
    request_timeout_s: float

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("http_request_failed", client=str(client_address), exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "klaviyo-sync"
    protocol_version = "HTTP/1.0"
    _head_only = False

    def setup(self) -> None:
        # A client that stalls (sends nothing, or half a request) is dropped when the
        # socket times out, instead of holding one of the pool's threads.
        super().setup()
        self.connection.settimeout(self.server.request_timeout_s)

    def do_HEAD(self) -> None:
        self._head_only = True
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._healthz()
        elif path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.metrics.registry))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz or /metrics\n")

    def _healthz(self) -> None:
        board = self.server.metrics.board
        body: dict[str, Any]
        try:
            if board is None:
                raise RuntimeError("the daemon is starting")
            status = board.latest()
            body, health = status.to_json(), status.health
        except Exception as exc:  # the probe must answer even when the database does not
            body, health = failing_status(f"status unavailable: {exc}"), Health.FAILING
        code = 503 if health is Health.FAILING else 200
        self._send(code, "application/json", json.dumps(body, default=str).encode() + b"\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self._head_only:
            self.wfile.write(body)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("http_request_error", error=format % args)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_request", request=format % args)


class HealthServer:
    """Serves /healthz and /metrics from a background thread and a bounded pool."""

    #: Threads answering requests; scrapes are quick, so a few suffice for any burst.
    MAX_THREADS = 8
    #: A request must arrive whole within this many seconds.
    REQUEST_TIMEOUT_S = 10.0

    def __init__(self, listen: str, metrics: Metrics,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        host, port = parse_listen(listen)
        try:
            server_class = _Server6 if ":" in host else _Server
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"daemon.http_listen: cannot listen on {listen}: "
                              f"{exc.strerror}") from exc
        self._server.metrics = metrics
        self._server.request_timeout_s = request_timeout_s
        self._server.pool = ThreadPoolExecutor(self.MAX_THREADS,
                                               thread_name_prefix="klaviyo-sync-http")
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="klaviyo-sync-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("http_listening", address=f"{self.address[0]}:{self.address[1]}")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.pool.shutdown(wait=False, cancel_futures=True)
        self._server.server_close()
