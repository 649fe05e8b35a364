"""The loopback listener: /healthz and /metrics over real HTTP, on a real state database."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest

from klaviyo_sync import __version__, config
from klaviyo_sync.business.order_tracker import OrdersReport
from klaviyo_sync.daemon.health import compute_status
from klaviyo_sync.daemon.http import HealthServer, parse_listen
from klaviyo_sync.daemon.metrics import Metrics, StatusBoard
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.parsers.report import IngestReport
from klaviyo_sync.senders.runner import SendReport
from klaviyo_sync.state import meta
from klaviyo_sync.state.db import open_state


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, sa.Engine, Metrics]]:
    log = tmp_path / "system.log"
    log.write_bytes(b"x" * 120)
    settings = config.from_mapping({"state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
                                    "log": {"path": str(log)}})
    engine = open_state(settings.state.url)
    metrics = Metrics()
    metrics.board = StatusBoard(lambda: compute_status(settings, engine), max_age_s=0)
    server = HealthServer("127.0.0.1:0", metrics)
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}", engine, metrics
    server.stop()
    engine.dispose()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_healthz_answers_200_while_healthy_and_503_when_failing(
        served: tuple[str, sa.Engine, Metrics]) -> None:
    base, engine, _ = served
    code, ctype, body = get(base + "/healthz")
    assert code == 200 and ctype == "application/json"
    assert json.loads(body)["health"] == "healthy"
    meta.put_json(engine, meta.AUTH_FAILURE, {"at": "now", "status": 401, "detail": "revoked"})
    code, _, body = get(base + "/healthz")
    data = json.loads(body)
    assert code == 503 and data["health"] == "failing" and data["auth_failure"]["status"] == 401


def test_metrics_exposes_gauges_and_counters(served: tuple[str, sa.Engine, Metrics]) -> None:
    base, _, metrics = served
    metrics.observe_job("tail", IngestReport(lines_read=40, events_enqueued=7, rejected=2,
                                             skipped=5), 0.02)
    metrics.observe_job("orders", OrdersReport(events_enqueued=3), 0.5)
    metrics.observe_job("send", SendReport(sent=9, dead=1, suppressed=2), 1.5)
    bulk = "POST /api/event-bulk-create-jobs"
    metrics.observe_requests([(bulk, 202, 80.0), (bulk, 202, 120.0),
                              ("POST /api/events", 500, 30.0), (bulk, None, 30000.0)])
    code, ctype, text = get(base + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    lines = set(text.splitlines())
    assert "klaviyo_sync_log_lines_read_total 40.0" in lines
    assert "klaviyo_sync_log_lines_rejected_total 2.0" in lines
    assert "klaviyo_sync_log_lines_skipped_total 5.0" in lines
    assert 'klaviyo_sync_events_enqueued_total{source="log"} 7.0' in lines
    assert 'klaviyo_sync_events_enqueued_total{source="order"} 3.0' in lines
    assert "klaviyo_sync_events_sent_total 9.0" in lines
    assert "klaviyo_sync_events_dead_lettered_total 1.0" in lines
    assert "klaviyo_sync_suppressions_sent_total 2.0" in lines
    assert ('klaviyo_sync_klaviyo_requests_total{endpoint="POST /api/event-bulk-create-jobs",'
            'status_code="202"} 2.0') in lines
    assert ('klaviyo_sync_klaviyo_requests_total{endpoint="POST /api/events",'
            'status_code="500"} 1.0') in lines
    assert ('klaviyo_sync_klaviyo_requests_total{endpoint="POST /api/event-bulk-create-jobs",'
            'status_code="none"} 1.0') in lines
    assert "klaviyo_sync_klaviyo_request_duration_seconds_count 4.0" in lines
    assert 'klaviyo_sync_klaviyo_request_duration_seconds_bucket{le="0.1"} 2.0' in lines
    assert 'klaviyo_sync_queue_events{state="pending"} 0.0' in lines
    assert "klaviyo_sync_tail_behind_bytes 120.0" in lines
    assert 'klaviyo_sync_health{klaviyo_sync_health="healthy"} 1.0' in lines
    assert 'klaviyo_sync_health{klaviyo_sync_health="failing"} 0.0' in lines
    assert "klaviyo_sync_up 1.0" in lines
    assert f'klaviyo_sync_build_info{{version="{__version__}"}} 1.0' in lines
    assert 'klaviyo_sync_job_runs_total{job="tail",outcome="ok"} 1.0' in lines
    assert not [line for line in lines if "_created" in line]


def test_job_duration_buckets_reach_the_hung_job_threshold() -> None:
    metrics = Metrics(hung_job_s=7200.0)
    metrics.observe_job("orders", None, 4000.0)
    text = generate_latest(metrics.registry).decode()
    assert 'klaviyo_sync_job_duration_seconds_bucket{job="orders",le="7200.0"} 1.0' in text
    assert 'klaviyo_sync_job_duration_seconds_bucket{job="orders",le="1800.0"} 0.0' in text


def test_metrics_still_answer_when_the_database_does_not(
        served: tuple[str, sa.Engine, Metrics]) -> None:
    base, _, metrics = served

    def broken() -> None:
        raise RuntimeError("database gone")

    metrics.board = StatusBoard(broken, max_age_s=0)  # type: ignore[arg-type]
    code, _, text = get(base + "/metrics")
    assert code == 200 and "klaviyo_sync_up 0.0" in text.splitlines()
    code, _, body = get(base + "/healthz")
    assert code == 503 and "database gone" in json.loads(body)["reasons"][0]


def test_unknown_paths_are_404(served: tuple[str, sa.Engine, Metrics]) -> None:
    assert get(served[0] + "/")[0] == 404


@pytest.mark.parametrize("listen", ["0.0.0.0:9377", "192.168.1.4:9377", "example.com:80"])
def test_only_loopback_addresses_are_accepted(listen: str) -> None:
    with pytest.raises(ConfigError, match="not a loopback address"):
        parse_listen(listen)


def test_loopback_forms() -> None:
    assert parse_listen("127.0.0.1:9377") == ("127.0.0.1", 9377)
    assert parse_listen("[::1]:9377") == ("::1", 9377)
    assert parse_listen("localhost:80") == ("localhost", 80)


def test_a_busy_port_is_a_clear_error(served: tuple[str, sa.Engine, Metrics]) -> None:
    port = served[0].rsplit(":", 1)[1]
    with pytest.raises(ConfigError, match="cannot listen on"):
        HealthServer(f"127.0.0.1:{port}", Metrics())


@pytest.fixture
def bare() -> Iterator[tuple[str, int]]:
    """A listener whose /metrics carries only the counters: cheap to hammer."""
    server = HealthServer("127.0.0.1:0", Metrics(), request_timeout_s=0.5)
    server.start()
    yield server.address
    server.stop()


def test_head_answers_like_get_without_a_body(bare: tuple[str, int]) -> None:
    conn = http.client.HTTPConnection(*bare, timeout=10)
    conn.request("HEAD", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.headers["Content-Length"]) > 0
    assert resp.read() == b""
    conn.close()


def test_a_client_that_sends_nothing_is_dropped_after_the_request_timeout(
        bare: tuple[str, int]) -> None:
    with socket.create_connection(bare, timeout=20) as idle:
        assert idle.recv(1024) == b""  # the server closed it; no answer owed


def test_idle_connections_hold_a_bounded_number_of_threads(bare: tuple[str, int]) -> None:
    before = threading.active_count()
    idle = [socket.create_connection(bare, timeout=20) for _ in range(60)]
    try:
        # Every connection has reached the server once a real request behind them is
        # answered (they are served in order of arrival, in a pool).
        assert get(f"http://{bare[0]}:{bare[1]}/metrics")[0] == 200
        assert threading.active_count() - before <= HealthServer.MAX_THREADS
    finally:
        for sock in idle:
            sock.close()


def test_300_concurrent_scrapes_are_all_answered(bare: tuple[str, int]) -> None:
    url = f"http://{bare[0]}:{bare[1]}/metrics"

    def scrape(_: int) -> int:
        with urllib.request.urlopen(url, timeout=60) as resp:
            resp.read()
            return int(resp.status)

    with ThreadPoolExecutor(max_workers=300) as pool:
        codes = list(pool.map(scrape, range(300)))
    assert codes == [200] * 300
