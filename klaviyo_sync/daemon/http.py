"""The optional loopback listener: /healthz (200 or 503 with the status as JSON) and /metrics.

Loopback only: the endpoints are unauthenticated, so anything farther away goes through
a reverse proxy or an exporter the operator controls.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "klaviyo-sync"

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
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_request", request=format % args)


class HealthServer:
    """Serves /healthz and /metrics from a background thread."""

    def __init__(self, listen: str, metrics: Metrics) -> None:
        host, port = parse_listen(listen)
        try:
            server_class = _Server6 if ":" in host else _Server
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"daemon.http_listen: cannot listen on {listen}: "
                              f"{exc.strerror}") from exc
        self._server.metrics = metrics
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
        self._server.server_close()
